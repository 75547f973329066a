"""Chaos (slow): ``kill -9`` at a random moment inside every stage of ``micro``, rerun the same
command until it finishes, and compare every result with an uninterrupted run.

    python -m pytest -q -m slow tests/pipeline/test_chaos.py
"""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from auggen.pipeline.stage import DONE
from auggen.pipeline.stages import STAGES

SEED = int(os.environ.get("AUGGEN_CHAOS_SEED", "0"))
# Files whose content must not depend on how often the run was killed (timings excluded).
COMPARED = (
    "*.safetensors",
    "*.rec",
    "*.idx",
    "*.index.json",
    "grid.csv",
    "best.json",
    "metrics.csv",
)


def _command(out: Path) -> list[str]:
    return [sys.executable, "-u", "-m", "auggen.pipeline", "--preset", "micro"] + [
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
    ]


def _kill_inside(out: Path, stage: str, delay: float) -> bool:
    """Start the run, ``kill -9`` it ``delay`` s after ``stage`` starts; True if the kill
    landed before the stage finished."""
    p = subprocess.Popen(_command(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if line.startswith(f"[{stage}] ") and ("running" in line or "resuming" in line):
            break
    else:
        p.wait()
        return False
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return not (out / stage / DONE).exists()


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _compare(ref: Path, got: Path) -> int:
    n = 0
    for pattern in COMPARED:
        for a in sorted(ref.rglob(pattern)):
            rel = a.relative_to(ref)
            if rel.parts[0].startswith(".") or "checkpoint-" in a.name:
                continue  # set-aside results and pruned intermediate checkpoints
            b = got / rel
            assert b.exists(), f"{rel} missing after the killed runs"
            if a.suffix == ".safetensors":
                ta, tb = _tensors(a), _tensors(b)
                assert ta.keys() == tb.keys(), rel
                for k in ta:
                    assert torch.equal(ta[k], tb[k]), f"{rel}: tensor {k} differs"
            elif a.suffix == ".csv":
                with open(a) as fa, open(b) as fb:
                    assert list(csv.reader(fa)) == list(csv.reader(fb)), rel
            else:
                assert a.read_bytes() == b.read_bytes(), rel
            n += 1
    return n


@pytest.mark.slow
def test_random_kill_9_in_every_stage_resumes_to_identical_results(tmp_path):
    rng = random.Random(SEED)
    ref, out = tmp_path / "ref", tmp_path / "chaos"
    subprocess.run(_command(ref), check=True, capture_output=True)
    # Kill at a uniform moment of the stage's uninterrupted duration, twice per stage.
    wall = {s: json.loads((ref / s / "timing.json").read_text())["wall_s"] for s in STAGES}
    kills = 0
    for stage in STAGES:
        for _ in range(2):
            if not (out / stage / DONE).exists():
                kills += _kill_inside(out, stage, rng.uniform(0.0, wall[stage]))
    done = subprocess.run(_command(out), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all((out / s / DONE).exists() for s in STAGES)
    assert kills >= len(STAGES) // 2  # runs were really cut inside stages
    assert _compare(ref, out) >= 15  # tensors of every bundle and model, CSVs, best.json
