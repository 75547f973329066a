"""One command for a lent GPU: build for it, run the GPU tests, time the kernels at EDM2 shapes,
write one CSV and a markdown table against the targets. Meant to finish within 10 minutes on
one H100/H200.

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check] [--skip-build]

1. build: ``pip install --no-build-isolation --no-deps -e .`` for this GPU's architecture;
2. tests: ``pytest -m gpu tests/ops``;
3. ops: each fused op, forward and forward+backward, at img64-S and 112 px shapes: GB/s as a
   fraction of a measured ``clone()`` (target >= 0.8);
4. attention: ``mp_attention`` forward and forward+backward TFLOP/s vs normalise-then-SDPA,
   both on q/k/v viewed from the qkv conv output as the network does (target: faster);
5. sampler: img64-S (random weights) images/s and MFU, fp32 and bf16, fused vs reference ops
   vs torch.compile, and bf16 with channels-last activations (decides the UNet's CUDA layout
   default; target: the best fused >= 2x the plain fp32 reference).

Without CUDA the build, the tests and the GPU targets are skipped with a line saying so, and
steps 3-5 run on the CPU at small sizes, so the script is exercised (and cannot rot) on
machines with no GPU.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _harness import device_name, time_fn  # noqa: E402

# Dense peak FLOP/s (bf16 tensor cores, tf32, fp32 CUDA cores) for the MFU column.
PEAKS = {
    "H200": (989e12, 494e12, 67e12),
    "H100": (989e12, 494e12, 67e12),
    "A100": (312e12, 156e12, 19.5e12),
}
FIELDS = ["section", "name", "shape", "dtype", "variant", "ms_p50", "value", "unit",
          "target", "ok", "device"]  # fmt: skip


def say(msg: str) -> None:
    print(f"[gpu_check] {msg}", flush=True)


def row(section, name, shape, dtype, variant, ms, value, unit, target="", ok=""):
    return dict(
        section=section, name=name, shape="x".join(map(str, shape)),
        dtype=str(dtype).replace("torch.", ""), variant=variant, ms_p50=round(ms, 4),
        value=round(value, 4), unit=unit, target=target, ok=ok,
    )  # fmt: skip


# --- 1, 2: build and tests -----------------------------------------------------------------


def build() -> None:
    major, minor = torch.cuda.get_device_capability()
    env = dict(os.environ, CMAKE_ARGS=f"-DCMAKE_CUDA_ARCHITECTURES={major}{minor} -DAUGGEN_CUDA=ON")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
           "-e", str(ROOT)]  # fmt: skip
    say(f"build for sm_{major}{minor}: {' '.join(cmd)}")
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    say(f"build done in {time.time() - t0:.0f} s")


def gpu_tests() -> str:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/ops", "-q", "-p", "no:cacheprovider"]
    say(" ".join(cmd))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    say(f"tests: {tail} (exit {proc.returncode})")
    if proc.returncode:
        print(proc.stdout[-6000:], proc.stderr[-2000:])
    return tail


# --- 3: ops as a fraction of clone() -------------------------------------------------------


def bench_ops(device, shapes, dtypes, repeats) -> list[dict]:
    import bench_ops as bo

    from auggen import ops

    # Both GPU backends are timed: the auto order (cuda, then triton) should follow the faster.
    gpu = [b for b in ("cuda", "triton") if b in ops.backends()]
    backends = gpu if device.type == "cuda" else ["cpu"]
    rows = []
    for dtype in dtypes:
        for shape in shapes:
            x = torch.randn(shape, device=device, dtype=dtype)
            copy_ms = time_fn(lambda x=x: x.clone(), device=device, repeats=repeats).p50
            copy_gbps = 2 * x.numel() * x.element_size() / copy_ms / 1e6
            rows.append(row("ops", "copy", shape, dtype, "clone", copy_ms, copy_gbps, "GB/s"))
            del x
            for name, (public, _, _, (fwd_n, bwd_n)) in bo.OPS.items():
                xs = bo._inputs(name, shape, dtype, device, False)
                for backend, kind in [(b, k) for b in backends for k in ("fwd", "fwd+bwd")]:
                    fn = lambda *a, f=public, b=backend: f(*a, backend=b)  # noqa: E731
                    traffic = fwd_n if kind == "fwd" else fwd_n + bwd_n
                    call = (lambda xs=xs, fn=fn: fn(*xs)) if kind == "fwd" else bo._fwd_bwd(fn, xs)
                    with torch.no_grad() if kind == "fwd" else torch.enable_grad():
                        ms = time_fn(call, device=device, repeats=repeats).p50
                    gbps = traffic * math.prod(shape) * xs[0].element_size() / ms / 1e6
                    frac = gbps / copy_gbps
                    rows.append(
                        row("ops", f"{name} {kind}", shape, dtype, backend, ms, frac,
                            "x clone GB/s", ">= 0.8", frac >= 0.8)
                    )  # fmt: skip
                del xs
    return rows


def faster_backend(rows: list[dict]) -> str | None:
    """Which GPU backend won more of the op timings (same op, kind, shape, dtype), as a note
    with the ``AUGGEN_GPU_ORDER`` that follows it; None unless both were timed."""
    ms: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r["section"] == "ops" and r["variant"] in ("cuda", "triton"):
            ms.setdefault((r["name"], r["shape"], r["dtype"]), {})[r["variant"]] = r["ms_p50"]
    pairs = [v for v in ms.values() if len(v) == 2]
    if not pairs:
        return None
    wins = sum(v["cuda"] <= v["triton"] for v in pairs)
    order = "cuda,triton" if 2 * wins >= len(pairs) else "triton,cuda"
    return (
        f"ops: cuda faster in {wins} of {len(pairs)} timings, triton in {len(pairs) - wins}; "
        f"auto order to use: AUGGEN_GPU_ORDER={order} (default cuda,triton)"
    )


# --- 4: attention vs normalise-then-SDPA ---------------------------------------------------


def _qkv_views(qkv, n, heads, ch, hw):
    """EDM2 Block: the qkv conv output viewed as (N, heads, HW, ch) q, k, v (no copies)."""
    return [t.transpose(2, 3) for t in qkv.reshape(n, heads, ch, 3, hw).unbind(3)]


def _sdpa(q, k, v):
    from auggen.ops.attention import _pixel_norm_heads

    return F.scaled_dot_product_attention(*(_pixel_norm_heads(t) for t in (q, k, v)))


def bench_attention(device, shapes, dtypes, repeats) -> list[dict]:
    from auggen.ops import mp_attention

    rows = []
    for dtype in dtypes:
        for n, heads, length, d in shapes:
            qkv = torch.randn(n, heads * d * 3, length, device=device, dtype=dtype)
            flops = 4 * n * heads * length * length * d
            ms = {}
            dims = (n, heads, d, length)
            for variant, fn in (("sdpa", _sdpa), ("fused", mp_attention)):
                for kind in ("fwd", "fwd+bwd"):
                    x = qkv.detach().requires_grad_(kind != "fwd")

                    def call(fn=fn, x=x, kind=kind, dims=dims):
                        out = fn(*_qkv_views(x, *dims))
                        if kind != "fwd":
                            torch.autograd.grad(out.sum(), x)

                    with torch.no_grad() if kind == "fwd" else torch.enable_grad():
                        ms[variant, kind] = time_fn(call, device=device, repeats=repeats).p50
                    work = flops * (1 if kind == "fwd" else 3.5)
                    tflops = work / ms[variant, kind] / 1e9
                    ok = "" if variant == "sdpa" else ms[variant, kind] < ms["sdpa", kind]
                    rows.append(
                        row("attention", f"attention {kind}", (n, heads, length, d), dtype,
                            variant, ms[variant, kind], tflops, "TFLOP/s",
                            "faster than sdpa" if variant == "fused" else "", ok)
                    )  # fmt: skip
    return rows


# --- 5: sampler ----------------------------------------------------------------------------


def bench_sampler(device, preset, resolution, batch, steps, variants) -> list[dict]:
    from torch.utils.flop_counter import FlopCounterMode

    from auggen.generator import build_unet, set_backend, set_memory_format
    from auggen.generator.sample import sample

    torch.manual_seed(0)
    net = build_unet(preset, resolution, label_dim=1000).to(device).eval()
    cond = torch.eye(1000)[torch.arange(batch) % 1000]
    x = torch.randn(2, 3, resolution, resolution, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, torch.ones(2, device=device), cond[:2].to(device))
    flops_per_eval = counter.get_total_flops() / 2  # per image
    evals = 2 * steps - 1
    peaks = next((p for k, p in PEAKS.items() if k in device_name(device)), None)
    rows, base = [], None
    for variant in variants:  # "fused fp32", "compile bf16", "fused bf16 channels_last", ...
        kind, prec, *layout = variant.split()
        set_backend(net, "reference" if kind == "reference" else None)
        set_memory_format(net, layout[0] if layout else "auto")
        kw = dict(num_steps=steps, batch_size=batch, autocast=prec == "bf16",
                  compile=kind == "compile")  # fmt: skip
        seeds = list(range(batch))
        sample(net, cond, seeds, **kw)  # warm-up (compiles, tunes tiles)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sample(net, cond, seeds, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        ips = batch / sec
        base = ips if variant == "reference fp32" else base
        mfu = ""
        if peaks:
            peak = peaks[0] if prec == "bf16" else peaks[2 if kind == "reference" else 1]
            mfu = round(ips * evals * flops_per_eval / peak, 4)
        speed = "" if base is None else round(ips / base, 2)
        rows.append(
            row("sampler", f"{preset} {resolution}px {steps} steps", (batch,), prec,
                " ".join([kind, *layout]),
                sec * 1e3, ips, "img/s", "", "")
            | dict(target=">= 2x reference fp32", ok=f"x{speed} mfu={mfu}")
        )  # fmt: skip
        say(f"sampler {variant}: {ips:.2f} img/s (x{speed} vs reference fp32), MFU {mfu}")
    set_backend(net, None)
    set_memory_format(net, "auto")
    return rows


# --- report ---------------------------------------------------------------------------------


def write(out: Path, rows: list[dict], device, notes: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    name = device_name(device)
    for r in rows:
        r["device"] = name
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    lines = [f"# gpu_check on {name}", "", *[f"- {n}" for n in notes], "",
             "| section | name | shape | dtype | variant | ms p50 | value | unit | target | ok |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) for k in FIELDS[:-1]) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    say(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.md')}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE / "results" / "gpu_check"), help="path stem")
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    notes, t0 = [], time.time()
    if not cuda:
        line = "no CUDA device: build, GPU tests and GPU targets skipped; CPU at small sizes"
        say(line)
        notes.append(line)
    if cuda and not args.skip_build:
        build()
    if cuda and not args.skip_tests:
        notes.append(f"pytest -m gpu tests/ops: {gpu_tests()}")
    repeats = args.repeats or (20 if cuda else 3)
    if cuda:
        act = [(64, 192, 64, 64), (64, 576, 16, 16), (64, 192, 112, 112), (64, 576, 28, 28)]
        att = [(64, 9, 256, 64), (64, 12, 64, 64), (64, 9, 784, 64), (64, 12, 196, 64)]
        dtypes = [torch.float32, torch.bfloat16]
        sampler = ("edm2-img64-s", 64, 64, 8)
        variants = ["reference fp32", "fused fp32", "reference bf16", "fused bf16",
                    "fused bf16 channels_last", "compile bf16"]  # fmt: skip
    else:
        act, att, dtypes = [(2, 64, 16, 16)], [(2, 2, 64, 64)], [torch.float32]
        sampler = ("tiny", 32, 4, 2)
        variants = ["reference fp32", "fused fp32", "fused fp32 contiguous"]
    rows = bench_ops(device, act, dtypes, repeats)
    say(f"ops timed ({time.time() - t0:.0f} s so far)")
    order_note = faster_backend(rows)
    if order_note:
        say(order_note)
        notes.append(order_note)
    rows += bench_attention(device, att, dtypes, repeats)
    say(f"attention timed ({time.time() - t0:.0f} s so far)")
    rows += bench_sampler(device, *sampler, variants)
    if not cuda:  # the targets are for a GPU: CPU rows only show that every step runs
        for r in rows:
            r["ok"] = ""
    notes.append(
        f"wall time {time.time() - t0:.0f} s; torch {torch.__version__}; fp32 matmul precision "
        f"{torch.get_float32_matmul_precision()!r} (attention precision follows it)"
    )
    write(Path(args.out), rows, device, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
