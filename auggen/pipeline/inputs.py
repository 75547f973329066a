"""Cheap fingerprints of the files a run reads from outside its folder (``--data``, ``.bin``s).

They go into the ``data`` stage's fingerprint, so adding identities, deleting images or
replacing a RecordIO or ``.bin`` file reruns ``data`` and every stage after it. Only names,
sizes and modification times are read (plus the first bytes of RecordIO and ``.bin`` files),
never the pixels: a 0.5 M-image folder costs one directory walk. A copy that does not keep
modification times (``cp`` without ``-p``) therefore counts as a change.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from auggen.data.dataset import locate_dataset

HEAD_BYTES = 1 << 16  # bytes hashed at the start of a RecordIO / .bin file


def _stat_row(path: Path, rel: str) -> str:
    st = path.stat()
    return f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n"


def _head(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()


def folder_fingerprint(root) -> dict:
    """Every non-hidden file under ``root``: relative path, size, mtime (sorted walk)."""
    root = Path(root)
    h, n = hashlib.sha256(), 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            h.update(_stat_row(p, p.relative_to(root).as_posix()).encode())
            n += 1
    return {"files": n, "digest": h.hexdigest()[:16]}


def file_fingerprint(path) -> dict:
    """One file: size, mtime and a hash of its first bytes."""
    path = Path(path)
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head": _head(path)[:16]}


def data_fingerprint(d) -> dict:
    """The fingerprint of what a ``DataConfig`` reads; a missing path is left to the stage."""
    out: dict = {"source": d.source}
    try:
        loc = locate_dataset(d.path, d.source)
        if loc.kind in ("orl", "folder"):
            out[loc.kind] = folder_fingerprint(loc.path)
        else:
            out["rec"] = file_fingerprint(loc.rec)
            out["idx"] = file_fingerprint(loc.idx)
            prop = loc.rec.with_name("property")
            if prop.exists():
                out["property"] = file_fingerprint(prop)
    except (FileNotFoundError, ModuleNotFoundError) as e:
        out["missing"] = str(e)  # the data stage reports it with its own message
    out["verification_bins"] = [
        file_fingerprint(p) if Path(p).is_file() else {"missing": str(p)}
        for p in d.verification_bins
    ]
    return out
