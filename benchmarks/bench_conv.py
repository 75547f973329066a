"""Benchmark ``auggen.ops.conv3x3`` (Winograd F(4x4, 3x3) on the CPU backend) against eager
``F.conv2d`` (oneDNN on CPU, cuDNN on CUDA) and ``torch.compile`` of it, forward and
forward+backward, on the 3x3 convolutions of the generator presets, channels-last fp32.

    python benchmarks/bench_conv.py --quick --csv benchmarks/results/conv_cpu.csv  # tiny UNet
    python benchmarks/bench_conv.py --csv benchmarks/results/conv_cpu_full.csv  # + img64-S, 112 px
    python benchmarks/bench_conv.py --bf16 --csv benchmarks/results/conv_cpu_bf16.csv  # bf16?

Shapes (N, C, H, W) -> K: every distinct 3x3 convolution of the ``tiny`` UNet at 32 px
(batch 16, as in sampling) and, without ``--quick``, the levels of EDM2 img64-S at 64 px and
of the same network at 112 px (batch 4 on CPU, 64 on CUDA). ``gflops`` counts a direct
convolution's 2·N·H·W·K·C·9 for every row alike, so it compares time, not work done.
``winograd`` says whether ``conv3x3`` took its Winograd path (on CUDA it is ``F.conv2d``).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as bench_ops.py: no page-fault noise

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import append_csv, device_name, time_fn  # noqa: E402

from auggen import ops  # noqa: E402

FIELDS = [
    "op", "preset", "shape", "out_channels", "backend", "winograd", "device", "threads",
    "ms_p20", "ms_p50", "ms_p80", "gflops", "speedup_vs_eager",
]  # fmt: skip

# (preset, C, H, W, K); N comes from the device
TINY = [
    ("tiny", 32, 32, 32, 32), ("tiny", 64, 32, 32, 32), ("tiny", 96, 32, 32, 32),
    ("tiny", 64, 16, 16, 64), ("tiny", 128, 16, 16, 64), ("tiny", 64, 8, 8, 64),
    ("tiny", 128, 8, 8, 64),
]  # fmt: skip
LARGE = [
    ("edm2-img64-s", 192, 64, 64, 192), ("edm2-img64-s", 384, 32, 32, 384),
    ("edm2-img64-s", 576, 16, 16, 576), ("edm2-img64-s", 768, 8, 8, 768),
    ("edm2-img64-s@112", 192, 112, 112, 192), ("edm2-img64-s@112", 576, 28, 28, 576),
]  # fmt: skip


def bench_shape(preset, n, c, h, w, k, device, repeats, with_compile):
    g = torch.Generator().manual_seed(0)
    x = (
        torch.randn(n, c, h, w, generator=g)
        .to(device)
        .contiguous(memory_format=torch.channels_last)
    )
    wt = (torch.randn(k, c, 3, 3, generator=g) / (3 * c**0.5)).to(device)
    u = ops.winograd_weight(wt)
    winograd = ops.winograd_applies(x, wt)
    eager = lambda a, b: F.conv2d(a, b, padding=1)  # noqa: E731
    variants = {"eager": eager, "ours": lambda a, b: ops.conv3x3(a, b)}
    if with_compile:
        torch._dynamo.reset()  # one compiled function per shape, not recompiles of one
        variants["compile"] = torch.compile(eager, dynamic=False)
    flops = 2 * n * h * w * k * c * 9
    rows = []
    for op in ("conv3x3", "conv3x3+bwd"):
        eager_ms = None
        for name, fn in variants.items():
            if op == "conv3x3":
                if name == "ours":
                    call = lambda: ops.conv3x3(x, wt, u=u)  # noqa: E731  (cached transform)
                else:
                    call = lambda fn=fn: fn(x, wt)  # noqa: E731
                mult = 1
            else:
                xg, wg = x.clone().requires_grad_(True), wt.clone().requires_grad_(True)

                def call(fn=fn, xg=xg, wg=wg):
                    y = fn(xg, wg)
                    torch.autograd.grad(y, (xg, wg), torch.ones_like(y))

                mult = 3  # forward, data gradient, weight gradient
            t = time_fn(call, device, warmup=2, repeats=repeats)
            if name == "eager":
                eager_ms = t.p50
            rows.append(
                {
                    "op": op,
                    "preset": preset,
                    "shape": f"{n}x{c}x{h}x{w}",
                    "out_channels": k,
                    "backend": name,
                    "winograd": winograd if name == "ours" else "",
                    "device": device_name(device),
                    "threads": torch.get_num_threads(),
                    "ms_p20": round(t.p20, 3),
                    "ms_p50": round(t.p50, 3),
                    "ms_p80": round(t.p80, 3),
                    "gflops": round(mult * flops / (t.p50 * 1e-3) / 1e9, 1),
                    "speedup_vs_eager": round(eager_ms / t.p50, 2),
                }  # fmt: skip
            )
            r = rows[-1]
            print(
                f"{op:<12} {preset:<17} {r['shape']:<15} ->{k:<4} {name:<8} "
                f"p50 {r['ms_p50']:>9.3f} ms {r['gflops']:>7.1f} GFLOP/s "
                f"x{r['speedup_vs_eager']}",
                flush=True,
            )
    return rows


def bench_bf16(preset, n, c, h, w, k, device, repeats):
    """Should conv3x3 get a bf16 Winograd path? oneDNN's bf16 convolution (channels-last; AMX
    or AVX-512 BF16 where the CPU has them) against the least a bf16 Winograd could cost: our
    transforms alone (a bf16 kernel would do the same fp32 arithmetic on half the bytes) plus
    the 36 GEMMs in bf16. Forward only: where the bound loses, so would the backward."""
    from auggen.ops import conv as conv_mod
    from auggen.ops._backend import cpu_kernels

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    wt = torch.randn(k, c, 3, 3, generator=g) / (3 * c**0.5)
    u = ops.winograd_weight(wt)
    lib, y = cpu_kernels(), torch.empty(n, k, h, w, memory_format=torch.channels_last)
    blocks = list(conv_mod._each_block(x, u))
    vb = [v.to(torch.bfloat16) for *_, v, _ in blocks]
    ub = u.to(torch.bfloat16)

    def transforms():
        for in_args, out_args, v, m in blocks:
            lib.wino_input_fwd(x.data_ptr(), v.data_ptr(), *in_args)
            lib.wino_output_fwd(m.data_ptr(), y.data_ptr(), *out_args)

    def gemms():
        for v in vb:
            torch.bmm(v, ub)

    xb, wb = x.to(torch.bfloat16), wt.to(torch.bfloat16)
    t_dnn = time_fn(lambda: F.conv2d(xb, wb, padding=1), device, warmup=2, repeats=repeats)
    t_tr = time_fn(transforms, device, warmup=2, repeats=repeats)
    t_mm = time_fn(gemms, device, warmup=2, repeats=repeats)
    t_ours = time_fn(lambda: ops.conv3x3(x, wt, u=u), device, warmup=2, repeats=repeats)
    flops = 2 * n * h * w * k * c * 9
    rows = []
    for name, ms in (
        ("eager-bf16", t_dnn.p20),
        ("winograd-bf16-bound", t_tr.p20 + t_mm.p20),
        ("ours-fp32", t_ours.p20),
    ):
        rows.append({
            "op": "conv3x3", "preset": preset, "shape": f"{n}x{c}x{h}x{w}", "out_channels": k,
            "backend": name, "winograd": name != "eager-bf16", "device": device_name(device),
            "threads": torch.get_num_threads(), "ms_p20": round(ms, 3), "ms_p50": "",
            "ms_p80": "", "gflops": round(flops / (ms * 1e-3) / 1e9, 1),
            "speedup_vs_eager": round(t_dnn.p20 / ms, 2),  # here: vs oneDNN's bf16 conv
        })  # fmt: skip
        print(
            f"bf16 {preset:<17} {n}x{c}x{h}x{w} ->{k:<4} {name:<20} p20 {ms:>9.3f} ms "
            f"x{rows[-1]['speedup_vs_eager']} vs oneDNN bf16",
            flush=True,
        )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", default=None, help="append the rows to this CSV")
    ap.add_argument("--quick", action="store_true", help="the tiny UNet's shapes only")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="CPU: oneDNN's bf16 conv against a bf16 Winograd's lower bound (p20 ms; "
        "speedup_vs_eager is then relative to oneDNN bf16)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    repeats = args.repeats or (10 if cpu else 50)
    shapes = TINY if args.quick else TINY + LARGE
    rows = []
    for preset, c, h, w, k in shapes:
        n = 16 if preset == "tiny" else (4 if cpu else 64)
        if args.bf16:
            rows += bench_bf16(preset, n, c, h, w, k, device, repeats)
            continue
        rows += bench_shape(preset, n, c, h, w, k, device, repeats, not args.no_compile)
    if args.csv:
        append_csv(args.csv, FIELDS, rows)


if __name__ == "__main__":
    main()
