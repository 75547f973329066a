"""The measured sections of benchmarks/gpu_check.py: fused ops, attention and the sampler,
each against fair baselines, timed with CUDA events over many calls with L2 flushed (host
clock on the CPU), reported as p20/p50/p80, with MFU against the peak of the precision used.
"""

from __future__ import annotations

import time
from functools import partial

import torch
import torch.nn.functional as F
from _harness import device_name, time_fn

PEAKS = {
    "H200": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "H100": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}
COPY_TARGET = 0.8  # fused elementwise ops: >= 80 % of copy bandwidth at EDM2 shapes
SAMPLER_TARGET = 2.0  # bf16 fused sampler >= 2x the fp32 reference


def _peak(device, precision: str) -> float | None:
    name = device_name(device)
    return next((p[precision] for k, p in PEAKS.items() if k in name), None)


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# --- timing: CUDA events with L2 flushed before each call; host clock on the CPU ------------


_FLUSH: dict = {}


def bench(fn, device, budget_ms: float = 300.0, min_iters: int = 5, max_iters: int = 200):
    """(p20, p50, p80) in ms of ``fn`` after warm-up. On CUDA each call is timed by a pair of
    events with a 256 MB buffer zeroed before it, so no input lives in L2 (50-60 MB on
    H100/H200) and the launch queue stays full; iterations fill ``budget_ms``."""
    if device.type != "cuda":
        t = time_fn(fn, device=device, warmup=1, repeats=min_iters)
        return t.p20, t.p50, t.p80
    flush = _FLUSH.setdefault(device, torch.empty(64 * 2**20, dtype=torch.int32, device=device))
    fn()
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    est_ms = max((time.perf_counter() - t0) * 1e3, 1e-3)
    n = int(min(max_iters, max(min_iters, budget_ms / est_ms)))
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(n)
    ]
    for start, end in events:
        flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    ms = torch.tensor([s.elapsed_time(e) for s, e in events], dtype=torch.float64)
    q = ms.quantile(torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64))
    return tuple(float(v) for v in q)


def _timing(p):
    return dict(ms_p20=p[0], ms_p50=p[1], ms_p80=p[2])


# --- ops: fused vs eager, torch.compile and copy bandwidth ----------------------------------


def _op_table():
    """bench_ops.OPS, imported on first use (after gpu_check's build has installed auggen)."""
    from bench_ops import OPS

    return OPS


def _op_inputs(n_in, with_c, shape, dtype, device, grad):
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(shape, generator=g).to(device, dtype) for _ in range(n_in)]
    if with_c:
        xs.append(torch.randn(shape[:2], generator=g).to(device, dtype) + 1)
    return [x.requires_grad_(grad) for x in xs]


def _call(fn, xs, grad):
    if not grad:
        return lambda: fn(*xs)
    outs = fn(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    gs = [torch.ones_like(o) for o in outs]

    def step():
        o = fn(*xs)
        torch.autograd.grad(o if isinstance(o, tuple) else (o,), xs, gs)

    return step


def ops_plan(gpu: bool, quick: bool = False):
    if gpu and not quick:  # img64-S first level and attention level (EDM2 shapes)
        return [(64, 192, 64, 64), (64, 576, 16, 16)], [torch.bfloat16, torch.float32]
    return [(2, 64, 16, 16)], [torch.float32]


def sec_ops(ctx) -> None:
    from auggen import ops

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    backends = [b for b in ("cuda", "triton") if b in ops.backends()] if gpu else ["cpu"]
    shapes, dtypes = ops_plan(gpu, ctx.args.quick)
    table = _op_table()
    for dtype in dtypes:
        for shape in shapes:
            x = torch.randn(shape, device=device, dtype=dtype)
            p = bench(lambda x=x: x.clone(), device)
            nbytes = x.numel() * x.element_size()
            copy_gbps = 2 * nbytes / p[1] / 1e6
            ctx.add(
                name="copy",
                shape=shape_str(shape),
                dtype=dtype_name(dtype),
                variant="clone",
                **_timing(p),
                value=copy_gbps,
                unit="GB/s",
            )
            del x
            for name, (public, reference, n_in, (fwd_n, bwd_n)) in table.items():
                if ctx.time_left() < 10:
                    return ctx.skip_rest(f"{name} {shape_str(shape)} {dtype_name(dtype)} and later")
                with_c = name == "modulated_mp_silu"
                variants = {"eager": reference}
                first = dtype == dtypes[0] and shape == shapes[0]
                if gpu and first and not ctx.args.quick:  # 2-5 s per compile: one shape
                    variants["compile"] = torch.compile(reference, dynamic=False)
                for b in backends:
                    variants[b] = lambda *a, b=b, f=public: f(*a, backend=b)
                for kind, traffic in (("fwd", fwd_n), ("fwd+bwd", fwd_n + bwd_n)):
                    grad = kind != "fwd"
                    xs = _op_inputs(n_in, with_c, shape, dtype, device, grad)
                    eager_ms = None
                    for label, fn in variants.items():
                        try:
                            with torch.enable_grad() if grad else torch.no_grad():
                                p = bench(_call(fn, xs, grad), device)
                        except Exception as e:
                            ctx.add(
                                name=f"{name} {kind}",
                                shape=shape_str(shape),
                                dtype=dtype_name(dtype),
                                variant=label,
                                ok=False,
                                note=f"{type(e).__name__}: {e}"[:300],
                            )
                            continue
                        eager_ms = p[1] if label == "eager" else eager_ms
                        frac = traffic * nbytes / p[1] / 1e6 / copy_gbps
                        fused = label in ("cuda", "triton")
                        ctx.add(
                            name=f"{name} {kind}",
                            shape=shape_str(shape),
                            dtype=dtype_name(dtype),
                            variant=label,
                            **_timing(p),
                            value=frac,
                            unit="x copy GB/s",
                            target=f">= {COPY_TARGET}" if fused and gpu else "",
                            ok=frac >= COPY_TARGET if fused and gpu else "",
                            note=f"x{eager_ms / p[1]:.2f} vs eager" if eager_ms else "",
                        )
                    del xs
    note = faster_backend(ctx.rows)
    if note:
        ctx.add(name="gpu order", note=note)


def shape_str(shape) -> str:
    return "x".join(map(str, shape))


def faster_backend(rows: list[dict]) -> str | None:
    """Which GPU backend won more of the op timings (same op, kind, shape, dtype), as a note
    with the ``AUGGEN_GPU_ORDER`` that follows it; None unless both were timed."""
    ms: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r["section"] == "ops" and r["variant"] in ("cuda", "triton") and r.get("ms_p50"):
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


# --- attention: fused vs normalise + the fastest SDPA backend, contiguous q/k/v --------------


def sdpa_backends():
    from torch.nn.attention import SDPBackend

    names = ["FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"]
    return [
        (n.split("_")[0].lower(), getattr(SDPBackend, n)) for n in names if hasattr(SDPBackend, n)
    ]


def _normalise_then_sdpa(backend_enum):
    from torch.nn.attention import sdpa_kernel

    from auggen.ops.attention import _pixel_norm_heads

    def run(q, k, v):
        with sdpa_kernel([backend_enum]):
            return F.scaled_dot_product_attention(*(_pixel_norm_heads(t) for t in (q, k, v)))

    return run


def attention_plan(gpu: bool, quick: bool = False):
    if gpu and not quick:  # (N, heads, L, D): img64-S at 16 px and 8 px
        return [(64, 9, 256, 64), (64, 12, 64, 64)], [torch.bfloat16, torch.float32]
    return [(2, 2, 64, 32)], [torch.float32]


def sec_attention(ctx) -> None:
    from auggen.ops import mp_attention

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    shapes, dtypes = attention_plan(gpu, ctx.args.quick)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    for dtype in dtypes:
        # fp32: our kernel with tf32 products; SDPA's backends as torch's allow_tf32 says
        precision = "bf16" if dtype != torch.float32 else ("tf32" if gpu else "ieee")
        sdpa_precision = precision if dtype != torch.float32 else f"fp32 (allow_tf32={tf32})"
        for n, heads, length, d in shapes:
            if ctx.time_left() < 10:
                return ctx.skip_rest(
                    f"attention {(n, heads, length, d)} {dtype_name(dtype)} and later"
                )
            flops = 4 * n * heads * length * length * d
            g = torch.Generator().manual_seed(0)
            base = [torch.randn(n, heads, length, d, generator=g).to(device, dtype) for _ in "qkv"]
            peak = _peak(device, precision) if gpu else None
            for kind, work in (("fwd", flops), ("fwd+bwd", 3.5 * flops)):  # bwd = 2.5 fwd
                grad = kind != "fwd"
                qkv = [t.clone().requires_grad_(grad) for t in base]
                sdpa_best, sdpa_name = None, ""
                cands = [(f"sdpa {b}", _normalise_then_sdpa(e)) for b, e in sdpa_backends()]
                fused = partial(mp_attention, precision=precision)
                for label, fn in [*cands, ("mp_attention", fused)]:
                    try:
                        with torch.enable_grad() if grad else torch.no_grad():
                            p = bench(_call(fn, qkv, grad), device)
                    except Exception as e:  # this SDPA backend rejects the inputs
                        ctx.add(
                            name=f"attention {kind}",
                            shape=shape_str((n, heads, length, d)),
                            dtype=dtype_name(dtype),
                            variant=label,
                            note=f"not usable: {e}"[:200],
                        )
                        continue
                    tflops = work / p[1] / 1e9
                    is_fused = label == "mp_attention"
                    if not is_fused and (sdpa_best is None or p[1] < sdpa_best):
                        sdpa_best, sdpa_name = p[1], label
                    ok = "" if not is_fused or sdpa_best is None else p[1] < sdpa_best
                    mfu = f"MFU {tflops * 1e12 / peak:.2f} of {precision} peak" if peak else ""
                    ctx.add(
                        name=f"attention {kind}",
                        shape=shape_str((n, heads, length, d)),
                        dtype=dtype_name(dtype),
                        variant=label,
                        **_timing(p),
                        value=tflops,
                        unit="TFLOP/s",
                        target=f"faster than {sdpa_name}" if is_fused else "",
                        ok=ok if gpu else "",
                        note=f"{precision if is_fused else sdpa_precision} products; {mfu}",
                    )
                del qkv
            del base


# --- sampler ---------------------------------------------------------------------------------


def sampler_plan(gpu: bool, quick: bool = False):
    if gpu and not quick:
        return ("edm2-img64-s", 64, 64, 8), [
            "reference fp32",
            "fused fp32",
            "reference bf16",
            "fused bf16",
            "fused bf16 channels_last",
            "compile bf16",
        ]
    return ("tiny", 32, 4, 2), ["reference fp32", "fused fp32", "fused fp32 contiguous"]


def sec_sampler(ctx) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from auggen.generator import build_unet, set_backend, set_memory_format
    from auggen.generator.sample import sample

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    (preset, resolution, batch, steps), variants = sampler_plan(gpu, ctx.args.quick)
    torch.manual_seed(0)
    net = build_unet(preset, resolution, label_dim=1000).to(device).eval()
    cond = torch.eye(1000)[torch.arange(batch) % 1000]
    # FLOPs with the reference ops: plain matmuls, which the counter sees (the fused
    # attention is a custom op it would miss)
    set_backend(net, "reference")
    x = torch.randn(2, 3, resolution, resolution, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, torch.ones(2, device=device), cond[:2].to(device))
    flops_per_image = counter.get_total_flops() / 2 * (2 * steps - 1)
    # cuDNN convolutions take TF32 in fp32 unless disabled: that is the fp32 peak that applies
    fp32_peak = "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
    base = None
    for variant in variants:
        if ctx.time_left() < (60 if "compile" in variant else 10):
            return ctx.skip_rest(f"sampler {variant} and later")
        kind, prec, *layout = variant.split()
        set_backend(net, "reference" if kind == "reference" else None)
        set_memory_format(net, layout[0] if layout else "auto")
        kw = dict(
            num_steps=steps, batch_size=batch, autocast=prec == "bf16", compile=kind == "compile"
        )
        seeds = list(range(batch))
        sample(net, cond, seeds, **kw)  # warm-up: compiles, tunes tiles, self-tests
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sample(net, cond, seeds, **kw)
        if gpu:
            torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        ips = batch / sec
        base = ips if variant == "reference fp32" else base
        speed = ips / base if base else None
        peak = _peak(device, "bf16" if prec == "bf16" else fp32_peak) if gpu else None
        mfu = ips * flops_per_image / peak if peak else None
        target = variant.startswith("fused bf16") or variant == "compile bf16"
        ctx.add(
            name=f"{preset} {resolution}px {steps} steps",
            shape=str(batch),
            dtype=prec,
            variant=" ".join([kind, *layout]),
            ms_p50=sec * 1e3,
            value=ips,
            unit="img/s",
            target=f">= {SAMPLER_TARGET}x reference fp32" if target and gpu else "",
            ok=(speed >= SAMPLER_TARGET) if target and gpu and speed else "",
            note=(f"x{speed:.2f} vs reference fp32" if speed else "")
            + (f"; MFU {mfu:.3f} of {'bf16' if prec == 'bf16' else fp32_peak} peak" if mfu else ""),
        )
    set_backend(net, None)
    set_memory_format(net, "auto")
