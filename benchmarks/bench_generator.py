"""Benchmark the EDM2 generator: training and sampling throughput (images/s) and peak memory.

Modes: ``fused`` (auggen.ops default backend), ``reference`` (plain-PyTorch ops) and
``compile`` (fused + torch.compile; sampling uses mode="reduce-overhead" on CUDA), each with
the activations in every layout of ``--memory-formats`` (``auto`` = the UNet's default:
channels-last on CPU, NCHW on CUDA).

- ``train``: one optimiser step (EDM2 loss, backward, Adam) on a random batch.
- ``sample``: a whole Heun run (2N-1 evaluations) for a batch of mixed conditions.
- ``train_generator``: the full loop (EMA, logging) for a few steps: the number a demo plans with.

    python benchmarks/bench_generator.py --quick --device cpu \\
        --csv benchmarks/results/generator_cpu.csv               # tiny/micro presets on CPU
    python benchmarks/bench_generator.py                         # CUDA: edm2-img64-s too
    python benchmarks/bench_generator.py --quick --device cpu --modes fused,reference \
        --memory-formats contiguous,channels_last                # the layout's share
    python benchmarks/bench_generator.py --targets --device cpu --threads 2 \
        --csv benchmarks/results/generator_cpu_bf16.csv          # issue 22's table (below)

``--targets``: tiny 32 px (train 32, sample 64 images) and ``edm2-narrow64`` (the issue's narrow
64 px EDM2 layout; train 8, sample 16): the default path (fused ops, ``auto`` precision: bf16
on a CPU with native bf16) against the fp32 reference ops, eager and under torch.compile;
``x_vs_reference_fp32`` and ``x_vs_compile_reference_fp32`` are ratios of medians from the same
run, ``load_avg`` the machine's 1-minute load when the row finished.

CSV rows: task, preset, resolution, mode, memory_format, batch, num_steps, dtype, threads,
device, conv_share (CPU: the fraction of the time in convolutions, which bounds what fused
elementwise ops can gain), ms_p20, ms_p50, ms_p80, img_per_s (from the median), peak_mem_mb,
params.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import resource
import sys
import tempfile
import time

# As in bench_ops.py: transparent huge pages for PyTorch's CPU allocator, so that rows measure
# the network rather than glibc's history-dependent mmap/page-fault behaviour (without it, the
# fused/reference ratio of one configuration ranged from 1.08x to 1.39x between runs).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import device_name, time_fn  # noqa: E402

from auggen.data.types import LabeledImages  # noqa: E402
from auggen.generator import build_unet, set_backend, set_memory_format  # noqa: E402
from auggen.generator.sample import sample  # noqa: E402
from auggen.generator.train import GenTrainConfig, edm2_loss, train_generator  # noqa: E402

FIELDS = [
    "task", "preset", "resolution", "mode", "memory_format", "batch", "num_steps", "dtype",
    "threads", "device", "conv_share", "ms_p20", "ms_p50", "ms_p80", "img_per_s", "peak_mem_mb",
    "params", "load_avg", "x_vs_reference_fp32", "x_vs_compile_reference_fp32",
]  # fmt: skip
LABELS = 40
# Presets beside auggen.generator.PRESETS: the narrow 64 px EDM2 layout (C = 64,
# mult 1-2-3-4, 2 blocks, attention at 16 and 8).
EXTRA_PRESETS = {"edm2-narrow64": ("edm2-img64-xs", dict(model_channels=64, num_blocks=2))}
# Modes: fused (auggen.ops default backend), reference (plain PyTorch ops), compile (fused +
# torch.compile), compile-reference (reference ops + torch.compile: "torch.compile of the
# published code"). dtype "auto" is the precision policy's choice (auggen.infra.runtime).


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


def _net(preset, res, mode, device, fmt):
    torch.manual_seed(0)
    base, kw = EXTRA_PRESETS.get(preset, (preset, {}))
    net = build_unet(base, res, LABELS, **kw).to(device)
    set_backend(net, "reference" if "reference" in mode else None)
    return set_memory_format(net, fmt)


def _dtype(dtype: str, device) -> str:
    """fp32 | bf16; "auto" is what the precision policy picks on ``device``."""
    if dtype == "auto":
        from auggen.infra.runtime import use_bf16

        return "bf16" if use_bf16("auto", device) else "fp32"
    return dtype


# Convolutions in the profile: oneDNN's (self time) and auggen's Winograd (the autograd nodes'
# total time: their C++ transforms and their GEMMs).
ONEDNN_CONV = ("aten::mkldnn_convolution", "aten::convolution_backward")
WINOGRAD = ("_Winograd", "_WinogradBackward")


def conv_share(fn, device) -> float | str:
    """Fraction of one call of ``fn`` spent in convolutions (forward and backward), from the
    profiler: the part no elementwise fusion can speed up (Amdahl). CPU only."""
    if device.type != "cpu":
        return ""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn()
        wall_us = (time.perf_counter() - t0) * 1e6
    events = prof.key_averages()
    conv_us = sum(e.self_cpu_time_total for e in events if e.key in ONEDNN_CONV)
    conv_us += sum(e.cpu_time_total for e in events if e.key in WINOGRAD)
    return round(conv_us / wall_us, 3)


def bench_train(preset, res, batch, mode, fmt, device, dtype, repeats):
    net = _net(preset, res, mode, device, fmt).train()
    fwd = torch.compile(net) if mode.startswith("compile") else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.99))
    y = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    labels = torch.eye(LABELS, device=device)[torch.arange(batch) % LABELS]
    autocast = dtype == "bf16"

    def step():
        sigma = (torch.randn(batch, 1, 1, 1, device=device) * 1.6 - 0.8).exp()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = edm2_loss(fwd, y, labels, sigma, torch.randn_like(y), 0.5)
        (loss.sum() / batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    _reset_peak(device)
    t = time_fn(step, device, warmup=2, repeats=repeats)
    return t, _peak_mb(device), sum(p.numel() for p in net.parameters()), conv_share(step, device)


def bench_sample(preset, res, batch, mode, fmt, device, dtype, num_steps, repeats):
    net = _net(preset, res, mode, device, fmt).eval()
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(LABELS, (2, batch), generator=g)
    cond = 0.7 * torch.eye(LABELS)[i] + 0.5 * torch.eye(LABELS)[j]  # mixed conditions

    def run():
        sample(
            net,
            cond,
            range(batch),
            num_steps=num_steps,
            autocast=dtype == "bf16",
            compile=mode.startswith("compile"),
        )

    _reset_peak(device)
    t = time_fn(run, device, warmup=1, repeats=repeats)
    return t, _peak_mb(device), sum(p.numel() for p in net.parameters()), conv_share(run, device)


def bench_loop(preset, res, batch, steps, device):
    imgs = torch.randint(0, 256, (400, 3, res, res), dtype=torch.uint8)
    data = LabeledImages(imgs, torch.arange(400) % LABELS)
    cfg = GenTrainConfig(
        preset=preset,
        resolution=res,
        batch_size=batch,
        steps=steps,
        log_every=steps,
        checkpoint_every=10**9,
    )
    with tempfile.TemporaryDirectory() as d:
        train_generator(
            GenTrainConfig(**{**cfg.__dict__, "steps": 1}), data, d, device, progress=False
        )  # warm-up (first-call overheads)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train_generator(cfg, data, d, device, progress=False)
        dt = time.perf_counter() - t0
    return dt


def _row(task, preset, res, mode, fmt, batch, num_steps, dtype, device, t, peak, params, share):
    return {
        "task": task, "preset": preset, "resolution": res, "mode": mode,
        "memory_format": fmt, "batch": batch,
        "num_steps": num_steps, "dtype": dtype, "threads": torch.get_num_threads(),
        "device": device_name(device), "conv_share": share, "ms_p20": round(t.p20, 2),
        "ms_p50": round(t.p50, 2), "ms_p80": round(t.p80, 2),
        "img_per_s": round(batch / (t.p50 / 1e3), 3), "peak_mem_mb": round(peak, 1),
        "params": params, "load_avg": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def add_ratios(rows: list[dict]) -> None:
    """Speed of each row over the fp32 reference rows (eager and compiled) of the same task,
    preset, batch and layout, all measured in this run."""

    def key(r):
        return (r["task"], r["preset"], r["resolution"], r["batch"], r["memory_format"])

    for col, mode in (
        ("x_vs_reference_fp32", "reference"),
        ("x_vs_compile_reference_fp32", "compile-reference"),
    ):
        base = {key(r): r["ms_p50"] for r in rows if r["mode"] == mode and r["dtype"] == "fp32"}
        for r in rows:
            if key(r) in base and r.get("ms_p50"):
                r[col] = round(base[key(r)] / r["ms_p50"], 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", default=None)
    ap.add_argument("--quick", action="store_true", help="few repeats, small configurations")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--modes", default="fused,reference,compile")
    ap.add_argument("--memory-formats", default="auto", help="auto,contiguous,channels_last")
    ap.add_argument("--num-steps", type=int, default=8, help="sampler steps (2N-1 evals)")
    ap.add_argument("--dtypes", default=None, help="fp32,bf16,auto (default: the preset's)")
    ap.add_argument(
        "--targets",
        action="store_true",
        help="issue 22's table: tiny 32 px (train 32, sample 64 images) and edm2-narrow64 "
        "(train 8, sample 16); the default path (fused, auto precision) against the fp32 "
        "reference ops, eager and compiled",
    )
    ap.add_argument("--no-loop", action="store_true", help="skip the train_generator rows")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rep = 3 if args.quick else 10
    # (preset, resolution, train batch, sample batch, dtype)
    if args.targets:
        configs = [("tiny", 32, 32, 64, "fp32"), ("edm2-narrow64", 64, 8, 16, "fp32")]
    elif device.type == "cuda":
        configs = [("tiny", 32, 128, 128, "bf16"), ("edm2-img64-s", 64, 64, 64, "bf16")]
    else:
        configs = [("tiny", 32, 32, 16, "fp32"), ("micro", 32, 32, 16, "fp32")]
    if args.targets:  # (mode, dtype) pairs: the default path and its two references
        runs = [("fused", "auto"), ("reference", "fp32"), ("compile-reference", "fp32")]
    rows = []
    for preset, res, batch, sb, base_dtype in configs:
        dtypes = (args.dtypes or base_dtype).split(",")
        if not args.targets:
            runs = list(itertools.product(args.modes.split(","), dtypes))
        for (mode, dtype), fmt in itertools.product(runs, args.memory_formats.split(",")):
            dtype = _dtype(dtype, device)
            try:
                t, peak, n, sh = bench_train(preset, res, batch, mode, fmt, device, dtype, rep)
                rows.append(
                    _row("train", preset, res, mode, fmt, batch, "", dtype, device, t, peak, n, sh)
                )
                print(rows[-1], flush=True)
                t, peak, n, sh = bench_sample(
                    preset, res, sb, mode, fmt, device, dtype, args.num_steps, max(2, rep // 3)
                )
                rows.append(
                    _row("sample", preset, res, mode, fmt, sb, args.num_steps, dtype, device, t,
                         peak, n, sh)
                )  # fmt: skip
                print(rows[-1], flush=True)
            except Exception as e:  # e.g. no compiler for torch.compile: report, keep going
                print(f"skip {preset} {mode} {fmt}: {type(e).__name__}: {e}", file=sys.stderr)
        if args.no_loop or preset in EXTRA_PRESETS:
            continue
        steps = 10 if args.quick else 50
        dt = bench_loop(preset, res, batch, steps, device)
        rate = steps * batch / dt
        print(f"train_generator {preset} {res}px batch {batch}: {rate:.1f} img/s", flush=True)
        rows.append({"task": "train_generator", "preset": preset, "resolution": res,
                     "mode": "fused", "memory_format": "auto", "batch": batch, "num_steps": "",
                     "dtype": _dtype("auto", device),  # GenTrainConfig's precision
                     "load_avg": round(os.getloadavg()[0], 2),
                     "threads": torch.get_num_threads(), "device": device_name(device),
                     "ms_p20": "", "ms_p50": round(dt / steps * 1e3, 2), "ms_p80": "",
                     "img_per_s": round(rate, 3), "peak_mem_mb": round(_peak_mb(device), 1),
                     "params": ""})  # fmt: skip
    add_ratios(rows)
    for r in rows:
        if r.get("x_vs_reference_fp32"):
            print(f"{r['task']:<7} {r['preset']:<14} {r['mode']:<18} {r['dtype']:<5} "
                  f"{r['ms_p50']:>10.1f} ms  x{r['x_vs_reference_fp32']} vs reference fp32, "
                  f"x{r.get('x_vs_compile_reference_fp32', '')} vs its torch.compile "
                  f"(load {r['load_avg']})", flush=True)  # fmt: skip
    if args.csv:
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        tmp = args.csv + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, args.csv)


if __name__ == "__main__":
    main()
