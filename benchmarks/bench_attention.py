"""Benchmark mp_attention (EDM2 self-attention) backends on EDM2's attention shapes.

Backends: ``triton`` (our fused flash-attention kernel), ``sdpa`` (separate pixel norms, then
PyTorch's scaled_dot_product_attention: the ``"cpu"`` backend of ``mp_attention``) and
``reference`` (unfused: pixel norms, explicit softmax(q kᵀ/√D) v). Forward and forward+backward.
FLOPs: 4·N·H·L²·D for the forward (two matmuls), 3.5× that for forward+backward (the usual
FlashAttention count: the backward does 2.5× the forward's matmul work).

    python benchmarks/bench_attention.py            # CUDA when present: all three backends
    python benchmarks/bench_attention.py --quick --device cpu --threads 1 \\
        --out benchmarks/results/attention_cpu.csv  # CPU: reference vs sdpa, small batch

Writes CSV rows: op, shape, dtype, backend, device, ms_p20, ms_p50, ms_p80, tflops.
"""

import argparse
import csv
import os
import sys
import time

import numpy as np
import torch

from auggen.ops.attention import mp_attention

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import device_name  # noqa: E402

FIELDS = ["op", "shape", "dtype", "backend", "device", "ms_p20", "ms_p50", "ms_p80", "tflops"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BACKENDS = {"triton": "triton", "sdpa": "cpu", "reference": "reference"}


def edm2_shapes(batch: int, quick: bool) -> list[tuple[int, int, int, int]]:
    """EDM2-S at 64 px: 16×16 with 576 channels (9 heads of 64) and 8×8 with 768 (12 heads)."""
    shapes = [(batch, 9, 256, 64), (batch, 12, 64, 64)]
    if not quick:
        shapes.append((batch, 1, 256, 96))  # 96 channels give one head of 96
    return shapes


def time_ms(fns: dict, device: torch.device, warmup: int, reps: int) -> dict:
    """p20/p50/p80 in ms of each callable in ``fns``, timed round-robin so that all of them
    see the same background load (the CPU machines here are shared)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {
        name: tuple(float(p) for p in np.percentile(t, [20, 50, 80])) for name, t in times.items()
    }


def make_run(backend, shape, dtype, device, backward):
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(shape, generator=g, device=device, dtype=dtype).requires_grad_(backward)
        for _ in "qkv"
    )
    grad = torch.randn(shape, generator=g, device=device, dtype=dtype)

    def run():
        with torch.enable_grad() if backward else torch.no_grad():
            out = mp_attention(q, k, v, backend=BACKENDS[backend])
            if backward:
                torch.autograd.grad(out, (q, k, v), grad)

    return run


def flops(shape, backward: bool) -> float:
    n, h, length, d = shape
    return 4.0 * n * h * length * length * d * (3.5 if backward else 1.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small batch, few repetitions")
    ap.add_argument("--batch", type=int, default=None, help="N (default 32, or 4 with --quick)")
    ap.add_argument("--dtypes", default=None, help="comma list of fp32,fp16,bf16")
    ap.add_argument("--backends", default=None, help="comma list of triton,sdpa,reference")
    ap.add_argument("--out", default=None, help="CSV path (default results/attention_<dev>.csv)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared machine, 1 avoids OpenMP barrier stalls

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (4 if args.quick else 32)
    dtypes = (
        args.dtypes.split(",") if args.dtypes else (["bf16", "fp16", "fp32"] if cuda else ["fp32"])
    )
    backends = args.backends.split(",") if args.backends else (
        ["triton", "sdpa", "reference"] if cuda else ["sdpa", "reference"]
    )  # fmt: skip
    for name in dtypes:
        if name not in DTYPES:
            raise ValueError(f"--dtypes entries must be in {sorted(DTYPES)}, got {name!r}")
    for name in backends:
        if name not in BACKENDS:
            raise ValueError(f"--backends entries must be in {sorted(BACKENDS)}, got {name!r}")
    warmup, reps = (3, 20) if args.quick else (5, 30)
    out = args.out or os.path.join(
        os.path.dirname(__file__), "results", f"attention_{'cuda' if cuda else 'cpu'}.csv"
    )
    dev_name = device_name(device)

    rows = []
    for shape in edm2_shapes(batch, args.quick):
        for dt in dtypes:
            for backward in (False, True):
                fns = {b: make_run(b, shape, DTYPES[dt], device, backward) for b in backends}
                for backend, (p20, p50, p80) in time_ms(fns, device, warmup, reps).items():
                    row = dict(
                        op="mp_attention_fwdbwd" if backward else "mp_attention_fwd",
                        shape="x".join(map(str, shape)),
                        dtype=dt,
                        backend=backend,
                        device=dev_name,
                        ms_p20=f"{p20:.4f}",
                        ms_p50=f"{p50:.4f}",
                        ms_p80=f"{p80:.4f}",
                        tflops=f"{flops(shape, backward) / (p50 * 1e-3) / 1e12:.4f}",
                    )
                    rows.append(row)
                    print(", ".join(f"{k}={row[k]}" for k in FIELDS if k != "device"), flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out)
    print(f"wrote {len(rows)} rows to {out} ({dev_name})")


if __name__ == "__main__":
    main()
