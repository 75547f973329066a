"""Which backends exist here, and which one an op call uses.

Detection runs once at import (cheap: triton is located, not imported) so that
``torch.compile`` sees constants. Auto choice: CPU tensors -> ``"cpu"`` (C++), CUDA
tensors -> the first available of ``GPU_ORDER`` (``"cuda"`` then ``"triton"``; the
environment variable ``AUGGEN_GPU_ORDER=triton,cuda`` swaps them, as benchmarks/gpu_check.py
advises from its timings); ``"reference"`` when nothing compiled is available. fp64 always
runs the reference code.

A backend proves itself before it serves: the first time it would run on a device (per
process, device and dtype family: fp32, or fp16/bf16) it runs each op once on tiny inputs
against the fp64 reference (``auggen.ops._selftest``). One that fails to load, launch or match
is dropped for that device and dtype family with one warning, and the next in the order
serves, down to the reference. Explicitly asking for a dropped backend raises.
``AUGGEN_BACKEND_SELFTEST=0`` skips the check; ``AUGGEN_BACKEND_FAIL=cuda,triton`` makes the
named backends fail it (fault injection); ``backend_report()`` says what was chosen and why.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import warnings
from dataclasses import dataclass, field

import torch

from auggen.ops._layout import dtype_code

BACKENDS = ("reference", "cpu", "triton", "cuda")

_MISSING: dict[str, str] = {}  # backend -> why it is not available here

try:
    from auggen import _C as cpu_ext
except ImportError as e:  # pure-Python install: the reference backend still works
    cpu_ext = None
    _MISSING["cpu"] = f"auggen._C does not import ({e})"

try:
    from auggen import _C_cuda as cuda_ext
except (ImportError, OSError) as e:  # built without nvcc, or its runtime cannot load
    cuda_ext = None
    _MISSING["cuda"] = f"auggen._C_cuda does not import ({e})"


# Triton's interpreter runs kernels on CPU tensors (tests without a GPU set it).
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _detect() -> tuple[str, ...]:
    found = ["reference"]
    if cpu_ext is not None:
        found.append("cpu")
    has_cuda = torch.cuda.is_available()
    if importlib.util.find_spec("triton") is None:
        _MISSING["triton"] = "the triton package is not installed"
    elif has_cuda or TRITON_INTERPRET:
        found.append("triton")
    else:
        _MISSING["triton"] = "no CUDA device (and TRITON_INTERPRET is not 1)"
    if cuda_ext is not None and has_cuda:
        found.append("cuda")
    elif cuda_ext is not None:
        _MISSING["cuda"] = "no CUDA device visible to torch"
    return tuple(found)


AVAILABLE = _detect()


def _gpu_order() -> tuple[str, ...]:
    raw = os.environ.get("AUGGEN_GPU_ORDER", "cuda,triton")
    order = tuple(b.strip() for b in raw.split(",") if b.strip())
    bad = [b for b in order if b not in ("cuda", "triton")]
    if bad or not order:
        raise ValueError(f"AUGGEN_GPU_ORDER must list 'cuda' and/or 'triton', got {raw!r}")
    return order


GPU_ORDER = _gpu_order()


def backends() -> list[str]:
    """Backends usable in this process, e.g. ``["reference", "cpu", "triton"]``."""
    return list(AVAILABLE)


@dataclass(frozen=True)
class Kernels:
    """Which backends have a kernel for one op: ``resolve``'s ``kernels`` argument.

    ``compiled``: the backends with a kernel of their own, which need their extension (or
    Triton), the right device and a passed self-test. ``stand_in``: (name, backend) pairs, a
    backend name the op has no kernel for and the one that runs in its place (a network built
    with ``backend="cuda"`` still runs an op without a CUDA kernel). ``fallback``: plain
    PyTorch on any device, which serves fp64 under ``backend=None`` and whatever no compiled
    kernel takes."""

    compiled: tuple[str, ...] = ("cpu", "triton", "cuda")
    stand_in: tuple[tuple[str, str], ...] = ()
    fallback: str = "reference"
    # ``stand_in`` as a dict, made once here: ``resolve`` runs on every op call
    by_name: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "by_name", dict(self.stand_in))


FUSED = Kernels()  # the elementwise and normalisation ops: a kernel on every backend


def resolve(backend: str | None, x: torch.Tensor, kernels: Kernels = FUSED) -> str:
    """The backend that runs an op on ``x``, the one resolver of every op; raises for unknown
    or unavailable names, and for a named backend that failed its self-test on ``x``'s
    device."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    stand_in = kernels.by_name
    if backend is None:
        if x.dtype != torch.float64:  # the compiled kernels are fp32/bf16/fp16 only
            for b in GPU_ORDER if x.device.type == "cuda" else ("cpu",):
                b = stand_in.get(b, b)
                if b in kernels.compiled and b in AVAILABLE and usable(b, x):
                    return b
        return kernels.fallback
    if backend not in kernels.compiled and backend not in stand_in:
        return backend  # plain PyTorch, any device
    if backend not in stand_in:
        _check_available(backend)
    _check_device(backend, x)
    if x.dtype == torch.float64:
        return "reference"
    if backend in stand_in:
        b = stand_in[backend]
        return b if b in AVAILABLE and usable(b, x) else kernels.fallback
    if not usable(backend, x):
        v = _VERDICTS[(backend, x.device, x.dtype)]
        raise RuntimeError(
            f"backend {backend!r} failed its self-test on {x.device} for {v.family} tensors "
            f"({v.op}: {v.reason}); backend=None picks the next working backend, "
            "AUGGEN_BACKEND_SELFTEST=0 skips the self-test"
        )
    return backend


def _check_available(backend: str) -> None:
    if backend not in AVAILABLE:
        why = _MISSING.get(backend, "")
        raise RuntimeError(
            f"backend {backend!r} is not available here{f' ({why})' if why else ''}; "
            f"available: {AVAILABLE}"
        )


def _check_device(backend: str, x: torch.Tensor) -> None:
    on_cuda = x.device.type == "cuda"
    if backend == "cpu" and on_cuda:
        raise ValueError(f"backend 'cpu' needs CPU tensors, got a tensor on {x.device}")
    if backend == "cuda" and not on_cuda:
        raise ValueError(f"backend 'cuda' needs CUDA tensors, got a tensor on {x.device}")
    if backend == "triton" and not on_cuda and not TRITON_INTERPRET:
        raise ValueError(
            f"backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1), got one on {x.device}"
        )


# ---- self-test: a backend proves itself on a device before it serves ----------------------


@dataclass(frozen=True)
class Verdict:
    backend: str
    device: str
    family: str  # "fp32" or "fp16/bf16"
    ok: bool
    tested: bool  # False: the self-test was skipped (AUGGEN_BACKEND_SELFTEST=0)
    op: str = ""  # the op that failed
    reason: str = ""
    ms: float = 0.0  # wall time of the self-test


FAMILIES = {torch.float32: "fp32", torch.float16: "fp16/bf16", torch.bfloat16: "fp16/bf16"}
_VERDICTS: dict[tuple, Verdict] = {}  # (backend, torch.device, dtype) -> Verdict
_SELFTEST_LOCK = threading.RLock()  # one self-test at a time; the others wait for its verdict
_LOCAL = threading.local()  # .testing: this thread runs a self-test (its own calls pass)


def _env_list(name: str) -> set[str]:
    return {b.strip() for b in os.environ.get(name, "").split(",") if b.strip()}


def usable(backend: str, x: torch.Tensor) -> bool:
    """Whether ``backend`` passed (or skipped) its self-test for ``x``'s device and dtype
    family; runs the self-test the first time. While torch.compile traces, inside CUDA graph
    capture and inside a self-test nothing new is tested: a known verdict counts, an unknown
    one trusts the backend for this call."""
    v = _VERDICTS.get((backend, x.device, x.dtype))
    if v is not None:
        return v.ok
    if backend == "reference" or compiling() or getattr(_LOCAL, "testing", False):
        return True
    if x.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return True
    return _selftest(backend, x.device, x.dtype).ok


# The self-test runs the public ops, which sit above this module: ``auggen/ops/__init__.py``
# hands its module in (``use_selftest``) instead of this module importing it.
_SELFTEST_MODULE: list = []


def use_selftest(module) -> None:
    """Run backend self-tests with ``module.run_selftest`` (raising ``module.SelfTestError``)."""
    _SELFTEST_MODULE[:] = [module]


def _selftest(backend: str, device: torch.device, dtype: torch.dtype) -> Verdict:
    st = _SELFTEST_MODULE[0]  # looked up per call, so a test may replace run_selftest
    SelfTestError, run_selftest = st.SelfTestError, st.run_selftest
    family = FAMILIES.get(dtype)
    if family is None:  # not a kernel dtype: nothing to prove, resolve() sends it elsewhere
        return Verdict(backend, str(device), str(dtype), True, False)
    with _SELFTEST_LOCK:
        v = _VERDICTS.get((backend, device, dtype))
        if v is not None:  # another thread finished it while this one waited
            return v
        t0 = time.perf_counter()
        if os.environ.get("AUGGEN_BACKEND_SELFTEST", "1") == "0":
            v = Verdict(
                backend, str(device), family, True, False, reason="AUGGEN_BACKEND_SELFTEST=0"
            )
        else:
            _LOCAL.testing = True
            try:
                n = run_selftest(
                    backend, device, dtype, backend in _env_list("AUGGEN_BACKEND_FAIL")
                )
                v = Verdict(backend, str(device), family, True, True, reason=f"{n} ops passed")
            except SelfTestError as e:
                v = Verdict(backend, str(device), family, False, True, e.op, e.reason)
            finally:
                _LOCAL.testing = False
        v = Verdict(**{**v.__dict__, "ms": (time.perf_counter() - t0) * 1e3})
        for dt, fam in FAMILIES.items():
            if fam == family:
                _VERDICTS[(backend, device, dt)] = v
    if not v.ok:
        warnings.warn(
            f"auggen.ops: backend {backend!r} dropped on {device} for {family} tensors: "
            f"{v.op} failed its self-test: {v.reason}. {_fallback_words(backend, device)}",
            RuntimeWarning,
            stacklevel=4,
        )
    return v


def _fallback_words(backend: str, device: torch.device) -> str:
    order = GPU_ORDER if device.type == "cuda" else ("cpu",)
    rest = (
        [b for b in order[order.index(backend) + 1 :] if b in AVAILABLE] if backend in order else []
    )
    nxt = " then ".join([*rest, "reference"])
    return f"Calls with backend=None now use {nxt} (untested backends are self-tested first)."


def backend_choices() -> list[dict]:
    """Every self-test verdict so far, one dict per (backend, device, dtype family)."""
    seen, out = set(), []
    for v in list(_VERDICTS.values()):
        key = (v.backend, v.device, v.family)
        if key not in seen:
            seen.add(key)
            out.append(dict(v.__dict__))
    return out


def backend_report() -> str:
    """What serves the ops in this process and why: available backends (and why the others
    are not), the GPU order, and each self-test's verdict so far."""
    gone = "; ".join(f"{b}: {why}" for b, why in _MISSING.items())
    lines = [
        f"auggen.ops backends available: {', '.join(AVAILABLE)}"
        + (f" (not available: {gone})" if gone else ""),
        f"auto order: CPU tensors cpu, CUDA tensors {','.join(GPU_ORDER)}, then reference; "
        f"fp64 runs the reference",
        "self-test: "
        + (
            "off (AUGGEN_BACKEND_SELFTEST=0)"
            if os.environ.get("AUGGEN_BACKEND_SELFTEST", "1") == "0"
            else "on (first use per device and dtype family)"
        )
        + (
            f"; AUGGEN_BACKEND_FAIL={os.environ['AUGGEN_BACKEND_FAIL']}"
            if os.environ.get("AUGGEN_BACKEND_FAIL")
            else ""
        ),
    ]
    choices = backend_choices()
    if not choices:
        lines.append("no backend has served a compiled op yet")
    for c in choices:
        head = f"{c['backend']} on {c['device']} ({c['family']}): "
        if not c["ok"]:
            words = f"DROPPED: {c['op']} failed its self-test: {c['reason']}"
        elif c["tested"]:
            words = f"passed its self-test ({c['reason']}, {c['ms']:.0f} ms)"
        else:
            words = f"trusted untested ({c['reason']})"
        lines.append(head + words)
    return "\n".join(lines)


def backend_line() -> str:
    """``backend_report`` in one line (pipeline log and report)."""
    parts = []
    for c in backend_choices():
        state = (
            "ok"
            if c["ok"] and c["tested"]
            else "untested"
            if c["ok"]
            else f"DROPPED ({c['op']}: {c['reason']})"
        )
        parts.append(f"{c['backend']}@{c['device']} {c['family']} {state}")
    return "ops backends: " + (
        "; ".join(parts) if parts else f"none used yet (available {', '.join(AVAILABLE)})"
    )


_POOL_THREADS = [0]


def cpu_kernels():
    """``auggen._C`` with its OpenMP pool sized like torch's (honours torch.set_num_threads)."""
    n = torch.get_num_threads()
    if n != _POOL_THREADS[0]:
        cpu_ext.set_num_threads(n)
        _POOL_THREADS[0] = n
    return cpu_ext


def compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling and is_compiling())


_PLAIN = (torch.Tensor, torch.nn.Parameter)  # not fake/functional tensors of a tracer
_EAGER: dict = {}  # custom op -> an equivalent torch.autograd.Function for eager calls


def dispatch(op, *tensors):
    """What runs custom op ``op`` on ``tensors``: ``op`` itself while torch.compile traces
    (or for tensor subclasses), else its plain Python implementation, through an equivalent
    ``autograd.Function`` when an input needs a gradient. The dispatcher and the custom-op
    autograd cost ~35 µs a call and as much per backward on CPU, more than the kernels of a
    small UNet layer; an autograd.Function costs a third of that."""
    tensors = [t for t in tensors if t is not None]
    if compiling() or any(type(t) not in _PLAIN for t in tensors):
        return op
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        eager = _EAGER.get(op)
        return op if eager is None else eager.apply
    return getattr(op, "_init_fn", op)


def register_autograd(op, backward, setup_context) -> None:
    """``op.register_autograd`` plus the same ``backward``/``setup_context`` as an
    autograd.Function that ``dispatch`` uses outside torch.compile."""
    op.register_autograd(backward, setup_context=setup_context)
    impl = getattr(op, "_init_fn", None)
    if impl is None:
        return

    def forward(ctx, *args):
        ctx.set_materialize_grads(False)  # unused outputs get None, as with custom ops
        out = impl(*args)
        setup_context(ctx, args, out)
        return out

    name = f"{getattr(op, '_name', 'op')}_eager"  # grad_fn: <pixel_norm_eagerBackward>
    body = {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    Eager = type(name, (torch.autograd.Function,), body)
    _EAGER[op] = Eager


CUDA_ERROR_INSUFFICIENT_DRIVER = 35


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}" if v else "none (no driver found)"


def cuda_versions(ext=None) -> tuple[int, int]:
    """(CUDA version the installed driver supports, CUDA runtime ``_C_cuda`` was built with),
    e.g. (12040, 13000); the driver's is 0 when there is none."""
    ext = ext or cuda_ext
    return int(ext.driver_version()), int(ext.runtime_version())


def driver_words(ext=None) -> str:
    """Error 35 in words a user can act on: the two versions and the two ways out."""
    driver, built = cuda_versions(ext)
    return (
        f"the driver supports CUDA {_cuda_version(driver)}, but auggen._C_cuda was built with "
        f"the CUDA {_cuda_version(built)} runtime (linked statically); install a newer driver "
        f"(CUDA 13 needs >= 580) or rebuild auggen with a toolkit no newer than the driver's"
    )


def check_cuda(err: int, op: str = "", ext=None) -> None:
    """Turn a cudaError_t returned by launcher ``op`` into a RuntimeError naming it."""
    if err == 0:
        return
    ext = ext or cuda_ext
    msg = f"auggen CUDA kernel failed ({op or 'unnamed'}): {ext.error_string(err)} ({err})"
    if err == CUDA_ERROR_INSUFFICIENT_DRIVER and hasattr(ext, "driver_version"):
        msg += f": {driver_words(ext)}"
    raise RuntimeError(msg)


def cuda_stream(x: torch.Tensor) -> int:
    return torch.cuda.current_stream(x.device).cuda_stream


_TRITON_FAMILIES: dict = {}  # family -> kernels/triton/<family>.py, filled on first use


def triton_module(family: str):
    """The Triton launchers of one op family: ``kernels/triton/<family>.py``."""
    if not _TRITON_FAMILIES:
        # Imported on first use: a kernel module imports triton (optional, slow to import).
        from auggen.kernels.triton import attention, elementwise, modulate, pixel_norm

        _TRITON_FAMILIES.update(
            attention=attention, elementwise=elementwise, modulate=modulate, pixel_norm=pixel_norm
        )
    return _TRITON_FAMILIES[family]


def launch(backend: str, family: str, name: str, tensors, scalars=(), numel=False, **kw):
    """The one launcher of every fused op: kernel ``name`` of op ``family`` on ``backend``.

    ``cpu`` / ``cuda``: ``name(dtype code of the first tensor, data pointers (None -> 0),
    [numel of it], *scalars[, stream])`` from ``auggen._C`` / ``auggen._C_cuda``, a CUDA error
    raised naming the kernel. ``triton``: ``name(*tensors, *scalars, **kw)`` of
    ``triton_module(family)``; what it returns is returned (attention's outputs).
    """
    if backend == "triton":
        return getattr(triton_module(family), name)(*tensors, *scalars, **kw)
    ref = next(t for t in tensors if t is not None)
    args = [dtype_code(ref), *(0 if t is None else t.data_ptr() for t in tensors)]
    if numel:
        args.append(ref.numel())
    if backend == "cpu":
        return getattr(cpu_kernels(), name)(*args, *scalars)
    with torch.cuda.device(ref.device):
        check_cuda(getattr(cuda_ext, name)(*args, *scalars, cuda_stream(ref)), name)
    return None
