"""Benchmark the fused ops: eager reference, torch.compile(reference), and our backends.

    python benchmarks/bench_ops.py --csv benchmarks/results/ops_cpu.csv [--quick]

Rows: forward, and forward+backward (``<op>+bwd``), per backend, plus a ``copy`` row
(``x.clone()``) as the device's measured bandwidth ceiling. GB/s counts the tensors each op
must read and write once (N-element units below); speed-up is against eager on the same row.

On CPU, every fresh 268 MB output is first-touched page by page; unless ``--no-thp`` is given,
``THP_MEM_ALLOC_ENABLE=1`` lets PyTorch's allocator use transparent huge pages so the rows
measure the kernels rather than page faults (it applies to every row alike).
"""

from __future__ import annotations

import argparse
import os
import sys

if "--no-thp" not in sys.argv:  # must be set before torch allocates
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import add_common_args, make_row, print_row, time_fn, write_csv  # noqa: E402

from auggen import ops  # noqa: E402
from auggen.ops import reference as ref  # noqa: E402

# op -> (public function, reference function, tensors in, (fwd, bwd) traffic in N elements)
OPS = {
    "pixel_norm": (ops.pixel_norm, ref.pixel_norm_ref, 1, (2, 3)),
    "pixel_norm_silu": (ops.pixel_norm_silu, ref.pixel_norm_silu_ref, 1, (3, 4)),
    "mp_silu": (ops.mp_silu, ref.mp_silu_ref, 1, (2, 3)),
    "mp_sum": (ops.mp_sum, ref.mp_sum_ref, 2, (3, 3)),
    "mp_sum_clamp": (ops.mp_sum_clamp, ref.mp_sum_clamp_ref, 2, (3, 5)),
    "modulated_mp_silu": (ops.modulated_mp_silu, ref.modulated_mp_silu_ref, 1, (2, 3)),
}


def _inputs(name, shape, dtype, device, channels_last):
    g = torch.Generator(device="cpu").manual_seed(0)
    n_in = OPS[name][2]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [
        torch.randn(shape, generator=g).to(device=device, dtype=dtype, memory_format=fmt)
        for _ in range(n_in)
    ]
    if name == "modulated_mp_silu":
        xs.append(torch.randn(shape[:2], generator=g).to(device=device, dtype=dtype) + 1)
    return xs


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _fwd_bwd(fn, xs):
    xs = [x.detach().requires_grad_() for x in xs]
    outs = _as_tuple(fn(*xs))
    grads = [torch.ones_like(o) for o in outs]

    def step():
        outs = _as_tuple(fn(*xs))
        torch.autograd.grad(outs, xs, grads)

    return step


def bench_op(name, shape, dtype, device, backends, repeats, channels_last, compile_ref):
    public, reference, _, (fwd_n, bwd_n) = OPS[name]
    numel = torch.Size(shape).numel()
    elsize = torch.empty((), dtype=dtype).element_size()
    xs = _inputs(name, shape, dtype, device, channels_last)
    variants = {"eager": reference}
    if compile_ref:
        variants["compile"] = torch.compile(reference, dynamic=False)
    for b in backends:
        variants[b] = lambda *a, b=b: public(*a, backend=b)
    rows = []
    for kind, traffic in (("", fwd_n), ("+bwd", fwd_n + bwd_n)):
        eager_ms = None
        for label, fn in variants.items():
            call = (lambda fn=fn: fn(*xs)) if not kind else _fwd_bwd(fn, xs)
            with torch.no_grad() if not kind else torch.enable_grad():
                timing = time_fn(call, device=device, repeats=repeats)
            eager_ms = timing.p50 if label == "eager" else eager_ms
            row = make_row(
                name + kind, shape, dtype, label, device, timing, traffic * numel * elsize,
                None if label == "eager" else eager_ms,
            )  # fmt: skip
            print_row(row)
            rows.append(row)
    return rows


def main(argv=None):
    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    parser.add_argument("--ops", nargs="*", default=list(OPS), choices=list(OPS))
    parser.add_argument("--no-thp", action="store_true", help="no transparent huge pages")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    shape = (8, 64, 16, 16) if args.quick else (64, 256, 32, 32)
    repeats = args.repeats or (5 if args.quick else 15)
    on_cuda = device.type == "cuda"
    backends = [b for b in ops.backends() if b != "reference"]
    backends = [b for b in backends if (b in ("cuda", "triton")) == on_cuda]

    x = torch.randn(shape, device=device, dtype=dtype)
    copy = time_fn(lambda: x.clone(), device=device, repeats=repeats)
    rows = [make_row("copy", shape, dtype, "torch", device, copy, 2 * x.numel() * x.element_size())]
    print_row(rows[0])
    for name in args.ops:
        rows += bench_op(
            name, shape, dtype, device, backends, repeats, args.channels_last, not args.no_compile
        )
    write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
