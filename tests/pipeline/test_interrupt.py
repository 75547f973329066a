"""A killed run (SIGTERM) records the interruption and a rerun resumes it."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_marks_the_stage_interrupted(tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "auggen.pipeline",
        "--preset",
        "micro",
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
        "--stages",
        "data,train_gen",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "train_gen" / "config.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err
    timing = json.loads((out / "train_gen" / "timing.json").read_text())
    assert timing["status"] == "interrupted"
    assert not (out / "train_gen" / "DONE").exists()
    assert (out / "data" / "DONE").exists()


def test_sigterm_inside_exec_of_a_string_still_exits_130(tmp_path):
    """CPython 3.11 run with ``-m`` exits by SIGINT (-2) once a plain KeyboardInterrupt has left
    an ``exec`` of a string, even if caught (dataclasses and torch exec strings). The pipeline's
    SIGTERM handler raises a subclass, so the status stays the 130 the command returns."""
    pkg = tmp_path / "sigterm_probe"
    pkg.mkdir()
    (pkg / "__main__.py").write_text(
        "import os, signal, sys\n"
        "from auggen.cli.pipeline import _raise_interrupt\n"
        "signal.signal(signal.SIGTERM, _raise_interrupt)\n"
        "try:\n"
        "    exec('os.kill(os.getpid(), signal.SIGTERM)\\nfor _ in range(10**6): pass')\n"
        "except KeyboardInterrupt:\n"
        "    pass\n"
        "sys.exit(130)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "sigterm_probe"], env=env, timeout=120)
    assert proc.returncode == 130
