"""Compile every GPU kernel for sm_90 / sm_80 without a GPU and report what ptxas says.

    python benchmarks/compile_check.py [--arch 90 80] [--csv report.csv] [--quick]

Triton: the launchers of ``auggen.kernels.triton`` are called on ``meta`` tensors of the
EDM2 shapes (img64-S, 112 px, ``tiny``) while ``JITFunction.run`` is replaced by a recorder,
so each recorded launch carries the exact arguments, constexprs, options and grid the op
would launch with; each is then compiled with Triton's own argument specialisation (ints
divisible by 16, aligned pointers) for each target and its PTX run through ``ptxas -v``.
CUDA: ``nvcc -Xptxas -v`` over ``kernels/cuda/*.cu`` with the flags CMake uses.

A row fails when ptxas reports spill stores or loads, when Triton's shared memory exceeds the
target's per-block limit, or when a grid exceeds CUDA's launch limits. Runs in a process
without ``TRITON_INTERPRET=1`` (the interpreter replaces the kernels it would compile).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Opt-in shared memory per block (bytes): H100/H200 227 KB, A100 163 KB.
SHARED_LIMIT = {90: 232448, 80: 166912}
GRID_LIMIT = (2**31 - 1, 65535, 65535)
REPO = Path(__file__).resolve().parents[1]

# (N, C, H, W) activations of the EDM2 UNets at batch 64 (encoder/decoder levels; the
# decoder's concatenated inputs have up to 2x the channels) and their attention (L, D=64).
ACTIVATIONS = {
    "img64-s": [(64, 192, 64, 64), (64, 384, 32, 32), (64, 576, 16, 16), (64, 1536, 8, 8)],
    "112px-s": [(64, 192, 112, 112), (64, 384, 56, 56), (64, 576, 28, 28), (64, 1536, 14, 14)],
    "tiny": [(64, 32, 32, 32), (64, 64, 8, 8)],
}
ATTENTION = {  # (N, heads, L, D)
    "img64-s": [(64, 9, 256, 64), (64, 12, 64, 64)],
    "112px-s": [(64, 9, 784, 64), (64, 12, 196, 64)],
    "big-l": [(16, 6, 1024, 64)],
    "tiny": [(64, 1, 64, 64)],
}
WEIGHT_ROWS = [(768, 768 * 9), (192, 3 * 64 + 64)]  # MPConv weight normalisation (out, fan_in)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass
class Launch:
    kernel: object  # a triton JITFunction
    args: tuple
    kwargs: dict
    grid: tuple
    what: str = ""


@dataclass
class Report:
    source: str  # "triton" | "cuda"
    kernel: str
    what: str
    arch: int
    registers: int = -1
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    shared: int = 0
    grid: str = ""
    problems: list[str] = field(default_factory=list)

    def row(self) -> dict:
        return {
            "source": self.source, "kernel": self.kernel, "what": self.what,
            "arch": f"sm_{self.arch}", "registers": self.registers, "stack": self.stack,
            "spill_stores": self.spill_stores, "spill_loads": self.spill_loads,
            "shared": self.shared, "grid": self.grid, "ok": not self.problems,
            "problems": "; ".join(self.problems),
        }  # fmt: skip


# --- recording the launches ------------------------------------------------------------


@contextlib.contextmanager
def recording(into: list[Launch], what: str = ""):
    """Inside: every ``kernel[grid](...)`` appends a Launch to ``into`` and launches nothing."""
    from triton.runtime.jit import JITFunction

    original = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        into.append(Launch(self, args, kwargs, tuple(grid), what))

    JITFunction.run = record
    try:
        yield
    finally:
        JITFunction.run = original


def _meta(shape, dtype, channels_last=False):
    t = torch.empty(shape, dtype=dtype, device="meta")
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


FAMILIES = ("pixel_norm", "modulate", "elementwise", "attention")


def triton_launches(quick: bool = False, families=FAMILIES) -> list[Launch]:
    """Every Triton launch the ops make at the listed shapes, dtypes, layouts and tiles
    (``families``: a subset of FAMILIES)."""
    from auggen.kernels.triton import attention as ka
    from auggen.kernels.triton import elementwise as ke
    from auggen.kernels.triton import modulate as km
    from auggen.kernels.triton import pixel_norm as kp

    from auggen.ops._layout import modulation_geometry, reduction_geometry

    dtypes = DTYPES[:2] if quick else DTYPES
    acts = sorted({s for shapes in ACTIVATIONS.values() for s in shapes})
    launches: list[Launch] = []
    for dtype in dtypes:
        for shape in acts:
            for cl in (False, True):
                x = _meta(shape, dtype, cl)
                outer, c, inner = reduction_geometry(x, 1)
                tag = f"{tuple(shape)} {'nhwc' if cl else 'nchw'} {dtype}".replace("torch.", "")
                with recording(launches, f"pixel_norm {tag}"):
                    kp.pixel_norm_fwd(x, x, None, outer, c, inner, 1e-4)
                    kp.pixel_norm_fwd(x, x, x, outer, c, inner, 1e-4)
                    kp.pixel_norm_bwd(x, x, None, x, outer, c, inner, 1e-4)
                    kp.pixel_norm_bwd(x, x, x, x, outer, c, inner, 1e-4)
                geom = modulation_geometry(x)
                cvec = _meta(shape[:2], dtype)
                with recording(launches, f"modulate {tag}"):
                    km.modulated_mp_silu_fwd(x, cvec, x, *geom)
                    km.modulated_mp_silu_bwd(x, x, cvec, x, cvec, *geom)
            x = _meta(shape, dtype)
            with recording(launches, f"elementwise {tuple(shape)} {dtype}".replace("torch.", "")):
                ke.mp_silu_fwd(x, x)
                ke.mp_silu_bwd(x, x, x)
                ke.mp_sum_fwd(x, x, x, 0.3, True, 256.0)
                ke.mp_sum_bwd(x, x, x, x, x, 0.3, True, 256.0)
        for rows, fan_in in WEIGHT_ROWS:
            w = _meta((rows, fan_in), torch.float32)
            with recording(launches, f"pixel_norm weights {(rows, fan_in)}"):
                kp.pixel_norm_fwd(w, w, None, rows, fan_in, 1, 1e-4)
                kp.pixel_norm_bwd(w, w, None, w, rows, fan_in, 1, 1e-4)
        shapes = sorted({s for shapes in ATTENTION.values() for s in shapes})
        for n, h, length, d in shapes[:2] if quick else shapes:
            q = _meta((n, h, length, d), dtype)
            lse = _meta((n, h, length), torch.float32)
            tag = f"attention {(n, h, length, d)} {dtype}".replace("torch.", "")
            for prec in ("ieee", "tf32", "bf16") if dtype == torch.float32 else ("tf32",):
                what = f"{tag} {prec if dtype == torch.float32 else ''}"
                for cfg in ka.fwd_configs(d, dtype, length, prec):
                    with recording(launches, f"{what} {_cfg(cfg)}"):
                        ka.mp_attention_fwd(q, q, q, config=cfg, precision=prec)
                for cfg in ka.bwd_configs(d, dtype, length, prec):
                    with recording(launches, f"{what} {_cfg(cfg)}"):
                        ka.mp_attention_bwd(q, q, q, q, q, lse, config=cfg, precision=prec)
    return [x for x in launches if x.what.split()[0] in families]


def _cfg(cfg: dict) -> str:
    keys = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
    return "/".join(str(cfg.get(k, "-")) for k in keys)


# --- compiling them ----------------------------------------------------------------------


def _specialize(launch: Launch):
    """(signature, constexprs, attrs, options) as Triton's launcher would derive them."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import native_specialize_impl

    fn = launch.kernel
    names = [p.name for p in fn.params]
    bound = dict(zip(names, launch.args))
    options = {}
    for k, v in launch.kwargs.items():
        (bound if k in names else options)[k] = v
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(fn.params):
        value = bound[p.name] if p.name in bound else p.default
        if p.is_constexpr:
            signature[p.name] = "constexpr"
            constexprs[(i,)] = value
            continue
        ty, spec = native_specialize_impl(
            BaseBackend, value, p.is_const, not p.do_not_specialize, True
        )
        signature[p.name] = ty
        if ty == "constexpr":  # ints equal to 1 and None are specialised away
            constexprs[(i,)] = value
        elif isinstance(spec, str) and spec:
            attrs[(i,)] = BaseBackend.parse_attr(spec)
    return signature, constexprs, attrs, options


def _ptxas(capability: int) -> str:
    """The ptxas Triton itself uses for ``capability`` (its PTX version needs that one)."""
    with contextlib.suppress(Exception):
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            return get_ptxas(capability).path
        except TypeError:  # Triton < 3.7: one bundled ptxas
            return get_ptxas().path
    found = shutil.which("ptxas")
    if found is None:
        raise FileNotFoundError("ptxas: neither Triton's bundled copy nor one on PATH")
    return found


_PTXAS_FUNC = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_PTXAS_FRAME = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_PTXAS_REGS = re.compile(r"Used (\d+) registers")


def parse_ptxas(log: str) -> dict[str, dict]:
    """Per entry function of a ``ptxas -v`` log: registers, stack and spill bytes."""
    out, current = {}, None
    for line in log.splitlines():
        if m := _PTXAS_FUNC.search(line):
            current = out.setdefault(m.group(1), {"arch": m.group(2)})
        elif current is not None and (m := _PTXAS_FRAME.search(line)):
            current.update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif current is not None and (m := _PTXAS_REGS.search(line)):
            current["registers"] = int(m[1])
    return out


def compile_triton(launch: Launch, capability: int) -> Report:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    name = launch.kernel.fn.__name__
    rep = Report("triton", name, launch.what, capability, grid=str(launch.grid))
    grid = tuple(launch.grid) + (1,) * (3 - len(launch.grid))
    for axis, (g, lim) in enumerate(zip(grid, GRID_LIMIT)):
        if not 1 <= g <= lim:
            rep.problems.append(f"grid axis {axis} = {g} outside [1, {lim}]")
    signature, constexprs, attrs, options = _specialize(launch)
    src = ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32), options=options)
    except Exception as e:  # a compile error is a finding, not a crash of the report
        rep.problems.append(f"compile error: {type(e).__name__}: {str(e)[:300]}")
        return rep
    rep.shared = int(compiled.metadata.shared)
    if rep.shared > SHARED_LIMIT.get(capability, SHARED_LIMIT[80]):
        rep.problems.append(f"shared memory {rep.shared} B > {SHARED_LIMIT[capability]} B")
    ptx = compiled.asm["ptx"]
    arch = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        Path(path).write_text(ptx)
        proc = subprocess.run(
            [_ptxas(capability), "-v", f"--gpu-name={arch}", path, "-o", path + ".o"],
            capture_output=True, text=True,
        )  # fmt: skip
    stats = next(iter(parse_ptxas(proc.stdout + proc.stderr).values()), {})
    _fill(rep, stats)
    return rep


def _fill(rep: Report, stats: dict) -> None:
    rep.registers = stats.get("registers", -1)
    rep.stack = stats.get("stack", 0)
    rep.spill_stores = stats.get("spill_stores", 0)
    rep.spill_loads = stats.get("spill_loads", 0)
    if rep.spill_stores or rep.spill_loads:
        rep.problems.append(f"spills {rep.spill_stores} B stored / {rep.spill_loads} B loaded")
    if rep.registers < 0:
        rep.problems.append("ptxas printed no register count")


def triton_report(
    capabilities=(90, 80), quick: bool = False, progress=None, families=FAMILIES
) -> list[Report]:
    """Compile each distinct launch once per target (launches that specialise alike share)."""
    launches = triton_launches(quick, families)
    seen: dict[tuple, Report] = {}
    reports = []
    for launch in launches:
        sig, consts, attrs, opts = _specialize(launch)
        key = (launch.kernel.fn.__name__, str(sig), str(consts), str(attrs), str(opts))
        for cap in capabilities:
            if (key, cap) not in seen:
                seen[(key, cap)] = compile_triton(launch, cap)
                if progress:
                    progress(seen[(key, cap)])
            base = seen[(key, cap)]
            rep = Report(**{**base.__dict__, "what": launch.what, "grid": str(launch.grid)})
            rep.problems = [p for p in base.problems if not p.startswith("grid")]
            grid = tuple(launch.grid) + (1,) * (3 - len(launch.grid))
            rep.problems += [
                f"grid axis {a} = {g} outside [1, {lim}]"
                for a, (g, lim) in enumerate(zip(grid, GRID_LIMIT))
                if not 1 <= g <= lim
            ]
            reports.append(rep)
    return reports


def cuda_report(capabilities=(90, 80), nvcc: str | None = None) -> list[Report]:
    """``nvcc -Xptxas -v`` over kernels/cuda/*.cu, per architecture (CMake's flags)."""
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc not found on PATH: the CUDA kernels cannot be checked")
    reports = []
    for src in sorted((REPO / "kernels" / "cuda").glob("*.cu")):
        for cap in capabilities:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [
                    nvcc, "-O3", "--use_fast_math", "-std=c++17", f"-I{REPO / 'csrc' / 'include'}",
                    "-Xptxas", "-v", "-gencode", f"arch=compute_{cap},code=sm_{cap}",
                    "-c", str(src), "-o", os.path.join(tmp, "k.o"),
                ]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True)
            log = proc.stdout + proc.stderr
            if proc.returncode != 0:
                rep = Report("cuda", src.name, "nvcc failed", cap)
                rep.problems.append(log[-500:])
                reports.append(rep)
                continue
            for mangled, stats in parse_ptxas(log).items():
                rep = Report("cuda", _demangle(mangled), src.name, cap)
                _fill(rep, stats)
                reports.append(rep)
    return reports


def _demangle(name: str) -> str:
    filt = shutil.which("c++filt")
    if filt is None:
        return name
    out = subprocess.run([filt, name], capture_output=True, text=True).stdout.strip()
    return re.sub(r"auggen::cuda::\(anonymous namespace\)::", "", out) or name


def summary(reports: list[Report]) -> str:
    """One line per kernel and arch: worst registers/stack/spills/shared over its launches."""
    worst: dict[tuple, dict] = {}
    for r in reports:
        w = worst.setdefault((r.source, r.kernel, r.arch), dict(n=0, reg=0, stack=0, spill=0,
                                                                shared=0, bad=0))  # fmt: skip
        w["n"] += 1
        w["reg"] = max(w["reg"], r.registers)
        w["stack"] = max(w["stack"], r.stack)
        w["spill"] = max(w["spill"], r.spill_stores + r.spill_loads)
        w["shared"] = max(w["shared"], r.shared)
        w["bad"] += bool(r.problems)
    lines = [f"{'source':7} {'kernel':60} {'arch':6} {'n':>4} {'regs':>5} {'stack':>6} "
             f"{'spill':>6} {'smem':>7} {'bad':>4}"]  # fmt: skip
    for (src, k, arch), w in sorted(worst.items()):
        lines.append(
            f"{src:7} {k[:60]:60} sm_{arch:<3} {w['n']:4d} {w['reg']:5d} {w['stack']:6d} "
            f"{w['spill']:6d} {w['shared']:7d} {w['bad']:4d}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80])
    parser.add_argument("--csv", help="write one row per launch and arch")
    parser.add_argument("--quick", action="store_true", help="fp32/bf16, fewer attention shapes")
    parser.add_argument("--only", choices=["triton", "cuda"], help="check one compiler")
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("run without TRITON_INTERPRET=1: the interpreter compiles nothing")
    reports: list[Report] = []
    if args.only != "cuda":
        reports += triton_report(tuple(args.arch), args.quick, families=args.families)
    if args.only != "triton":
        if shutil.which("nvcc"):
            reports += cuda_report(tuple(args.arch))
        else:
            print("compile_check: nvcc not on PATH, CUDA kernels not checked", file=sys.stderr)
    print(summary(reports))
    bad = [r for r in reports if r.problems]
    for r in bad[:40]:
        print(f"FAIL {r.source} {r.kernel} sm_{r.arch} [{r.what}]: {'; '.join(r.problems)}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            rows = [r.row() for r in reports]
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["kernel"])
            writer.writeheader()
            writer.writerows(rows)
    print(f"compile_check: {len(reports)} kernel builds, {len(bad)} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Launch", "Report", "parse_ptxas", "triton_launches", "triton_report", "cuda_report"]
