"""GPU kernels checked without a GPU: Triton compiled for sm_90/sm_80 with the launches the ops
make (``benchmarks/compile_check.py``, developer tooling outside the package), ptxas/nvcc
register and spill reports, launch grids.

Triton cannot compile under TRITON_INTERPRET=1 (set by conftest on CPU machines), so each
check runs in a fresh interpreter without it.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from compile_check import parse_ptxas  # noqa: E402

pytest.importorskip("triton")


def _run(code: str, timeout: int = 3000) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    return proc.stdout


def test_parse_ptxas_log():
    log = """ptxas info    : Compiling entry function '_k' for 'sm_90a'
ptxas info    : Function properties for _k
    5208 bytes stack frame, 7912 bytes spill stores, 7900 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 16 bytes smem"""
    stats = parse_ptxas(log)["_k"]
    assert stats == dict(arch="sm_90a", stack=5208, spill_stores=7912, spill_loads=7900,
                         registers=32)  # fmt: skip


def test_attention_grid_folds_the_batch():
    """N * heads = 70,000 > 65,535: every launch still fits CUDA's grid limits."""
    out = _run(
        """
        import torch
        from auggen.kernels.triton import attention as ka
        from compile_check import GRID_LIMIT, recording
        q = torch.empty(70000, 1, 64, 64, device="meta")
        lse = torch.empty(70000, 1, 64, device="meta")
        got = []
        with recording(got):
            ka.mp_attention_fwd(q, q, q, config=ka.fwd_configs(64, torch.float32, 64)[0])
            ka.mp_attention_bwd(q, q, q, q, q, lse, config=ka.bwd_configs(64, torch.float32)[0])
        for launch in got:
            grid = tuple(launch.grid) + (1,) * (3 - len(launch.grid))
            assert all(1 <= g <= lim for g, lim in zip(grid, GRID_LIMIT)), launch.grid
        print(len(got))
        """
    )
    assert int(out.split()[-1]) == (3 + 1) + (3 + 2)  # normalise q, k, v; fwd | dkdv, dq


def test_attention_tiles_fit_short_sequences():
    """L = 64 uses tiles of at most 64 rows (BLOCK_M = 128 would leave half of one empty)."""
    out = _run(
        """
        import torch
        from auggen.kernels.triton import attention as ka
        for dt in (torch.float32, torch.bfloat16):
            for cfg in ka.fwd_configs(64, dt, 64) + ka.bwd_configs(64, dt, 64):
                assert cfg["BLOCK_M"] <= 64 and cfg["BLOCK_N"] <= 64, cfg
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


@pytest.mark.slow
def test_triton_kernels_compile_without_spills():
    """Every Triton launch of the ops at the EDM2 shapes (fp32/bf16, attention at L = 64 and
    256), compiled for sm_90 and sm_80: no spills, shared memory within the limit, grids in
    range. The full matrix (fp16, L = 196, 784, 1024) is ``python benchmarks/compile_check.py``.
    """
    out = _run(
        """
        import compile_check as cc
        reports = cc.triton_report((90, 80), quick=True)
        print(cc.summary(reports))
        bad = [f"{r.kernel} sm_{r.arch} [{r.what}]: {r.problems}" for r in reports if r.problems]
        assert not bad, "\\n".join(bad[:20])
        """
    )
    assert "_mp_attention_fwd_kernel" in out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_cuda_kernels_compile_without_spills():
    import compile_check as cc

    reports = cc.cuda_report((90, 80))
    assert reports, "ptxas reported no kernels"
    bad = [f"{r.kernel} sm_{r.arch}: {r.problems}" for r in reports if r.problems]
    assert not bad, "\n".join(bad)
