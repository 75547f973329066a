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
