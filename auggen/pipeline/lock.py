"""One run per output folder: an exclusive ``flock`` on ``<out>/.lock``.

The operating system drops the lock when the holding process ends, however it ends
(``kill -9`` included), so there is never a stale lock to clean up. The file keeps the
holder's pid, host, start time and command line, which a second run prints when it is
turned away.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not guarded
    fcntl = None

LOCK = ".lock"


class RunFolderBusy(RuntimeError):
    pass


class RunLock:
    """``with RunLock(out):`` holds ``out`` for this process or raises ``RunFolderBusy``."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _describe(os.read(fd, 4096))
                os.close(fd)
                raise RunFolderBusy(
                    f"{self.folder} is in use by another auggen run ({holder}); wait for it "
                    "to finish, stop it, or pass another --out"
                ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (ValueError, KeyError, UnicodeDecodeError):
        return "holder unknown"
