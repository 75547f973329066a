"""Benchmark the fused ops: eager reference, torch.compile(reference), and our backends.

    python benchmarks/bench_ops.py --csv benchmarks/results/ops_cpu.csv [--quick]
    python benchmarks/bench_ops.py --overhead --csv benchmarks/results/ops_overhead_cpu.csv

Rows: forward, and forward+backward (``<op>+bwd``), per backend, plus a ``copy`` row
(``x.clone()``) per shape as the device's measured bandwidth ceiling. GB/s counts the tensors
each op must read and write once (N-element units below); speed-up is against eager on the
same row. Shapes: the first and the attention levels of EDM2 img64-S and of the 112 px
generator (channels 192 / 576; batch 64 on CUDA, 4 on CPU), or one fixed shape (``--quick``).
``--overhead``: per-call host time on tiny (2, 8, 4, 4) tensors, where the kernels cost
nothing: our ops with and without autograd vs eager vs torch.compile.

CPU numbers taken while other jobs share the machine are noisy: the device column carries
the 1-minute load average; compare ratios from one run, not runs with each other.

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


def preset_shapes(batch: int) -> list[tuple[int, int, int, int]]:
    """(N, C, H, W): first level and attention level of img64-S (64, 16 px) and 112 px."""
    return [(batch, 192, 64, 64), (batch, 576, 16, 16)] + [
        (batch, 192, 112, 112),
        (batch, 576, 28, 28),
    ]


def bench_overhead(device, repeats: int) -> list[dict]:
    """Per-call host cost (µs in the ms columns x 1000) on tensors too small to matter."""
    shape, rows = (2, 8, 4, 4), []
    backend = next(b for b in ops.backends() if b in (("cuda", "triton") if device.type ==
                                                       "cuda" else ("cpu",)))  # fmt: skip
    for name in OPS:
        public, reference, _, _ = OPS[name]
        xs = _inputs(name, shape, torch.float32, device, False)
        variants = {
            "eager": reference,
            "compile": torch.compile(reference, dynamic=False),
            backend: lambda *a, b=backend, f=public: f(*a, backend=b),
        }
        eager_ms = None
        for kind in ("no_grad", "+bwd"):
            for label, fn in variants.items():
                call = (lambda fn=fn, xs=xs: fn(*xs)) if kind == "no_grad" else _fwd_bwd(fn, xs)
                ctx = torch.no_grad() if kind == "no_grad" else torch.enable_grad()
                with ctx:
                    timing = time_fn(call, device=device, warmup=20, repeats=repeats)
                eager_ms = timing.p50 if label == "eager" else eager_ms
                op = f"{name}/call" + ("" if kind == "no_grad" else "+bwd")
                row = make_row(op, shape, torch.float32, label, device, timing, 0,
                               None if label == "eager" else eager_ms)  # fmt: skip
                print_row(row)
                rows.append(row)
    return rows


def _note_load(rows: list[dict]) -> list[dict]:
    if hasattr(os, "getloadavg"):
        load = f" [load {os.getloadavg()[0]:.1f}]"
        for r in rows:
            r["device"] += load
    return rows


def main(argv=None):
    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    parser.add_argument("--ops", nargs="*", default=list(OPS), choices=list(OPS))
    parser.add_argument("--no-thp", action="store_true", help="no transparent huge pages")
    parser.add_argument("--overhead", action="store_true", help="per-call host cost only")
    parser.add_argument("--batch", type=int, default=None, help="batch of the preset shapes")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    on_cuda = device.type == "cuda"
    if args.overhead:
        write_csv(args.csv, _note_load(bench_overhead(device, args.repeats or 200)))
        return
    batch = args.batch or (64 if on_cuda else 4)
    shapes = [(8, 64, 16, 16)] if args.quick else preset_shapes(batch)
    repeats = args.repeats or (5 if args.quick else 15)
    backends = [b for b in ops.backends() if b != "reference"]
    backends = [b for b in backends if (b in ("cuda", "triton")) == on_cuda]

    rows = []
    for shape in shapes:
        x = torch.randn(shape, device=device, dtype=dtype)
        copy = time_fn(lambda x=x: x.clone(), device=device, repeats=repeats)
        nbytes = 2 * x.numel() * x.element_size()
        rows.append(make_row("copy", shape, dtype, "torch", device, copy, nbytes))
        print_row(rows[-1])
        del x
        for name in args.ops:
            rows += bench_op(
                name, shape, dtype, device, backends, repeats, args.channels_last,
                not args.no_compile,
            )  # fmt: skip
    write_csv(args.csv, _note_load(rows))


if __name__ == "__main__":
    main()
