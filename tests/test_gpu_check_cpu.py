"""benchmarks/gpu_check.py runs end to end without a GPU (so it cannot rot before one is lent)."""

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_faster_backend_counts_paired_timings():
    mod = _load()
    rows = [
        mod.row("ops", "mp_silu fwd", (2, 8), "bf16", "cuda", 1.0, 0, ""),
        mod.row("ops", "mp_silu fwd", (2, 8), "bf16", "triton", 2.0, 0, ""),
        mod.row("ops", "mp_sum fwd", (2, 8), "bf16", "cuda", 3.0, 0, ""),
        mod.row("ops", "mp_sum fwd", (2, 8), "bf16", "triton", 1.0, 0, ""),
        mod.row("ops", "pixel_norm fwd", (2, 8), "bf16", "cuda", 3.0, 0, ""),
        mod.row("ops", "pixel_norm fwd", (2, 8), "bf16", "triton", 1.0, 0, ""),
        mod.row("ops", "copy", (2, 8), "bf16", "clone", 0.1, 0, ""),
    ]
    note = mod.faster_backend(rows)
    assert "cuda faster in 1 of 3" in note and "AUGGEN_GPU_ORDER=triton,cuda" in note
    assert mod.faster_backend(rows[:1] + rows[-1:]) is None  # nothing paired


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU this is the real, long check")
def test_gpu_check_runs_on_cpu(tmp_path, one_thread):
    mod = _load()
    stem = tmp_path / "gpu_check"
    assert mod.main(["--skip-build", "--skip-tests", "--repeats", "1", "--out", str(stem)]) == 0
    with open(f"{stem}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    sections = {r["section"] for r in rows}
    assert {"ops", "attention", "sampler"} <= sections
    sampler = [r for r in rows if r["section"] == "sampler"]
    assert [r["variant"] for r in sampler] == ["reference", "fused", "fused contiguous"]
    assert all(float(r["value"]) > 0 for r in sampler)
    md = Path(f"{stem}.md").read_text()
    assert "no CUDA device" in md and "| sampler |" in md
