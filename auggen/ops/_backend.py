"""Which backends exist here, and which one an op call uses.

Detection runs once at import (cheap: triton is located, not imported) so that
``torch.compile`` sees constants. Auto choice: CPU tensors -> ``"cpu"`` (C++), CUDA
tensors -> the first available of ``GPU_ORDER`` (``"cuda"`` then ``"triton"``; the
environment variable ``AUGGEN_GPU_ORDER=triton,cuda`` swaps them, as benchmarks/gpu_check.py
advises from its timings); ``"reference"`` when nothing compiled is available. fp64 always
runs the reference code.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import torch

BACKENDS = ("reference", "cpu", "triton", "cuda")

try:
    from auggen import _C as cpu_ext
except ImportError:  # pure-Python install: the reference backend still works
    cpu_ext = None

try:
    from auggen import _C_cuda as cuda_ext
except (ImportError, OSError):  # built without nvcc, or its runtime cannot load
    cuda_ext = None


# Triton's interpreter runs kernels on CPU tensors (tests without a GPU set it).
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _detect() -> tuple[str, ...]:
    found = ["reference"]
    if cpu_ext is not None:
        found.append("cpu")
    has_cuda = torch.cuda.is_available()
    if importlib.util.find_spec("triton") is not None and (has_cuda or TRITON_INTERPRET):
        found.append("triton")
    if cuda_ext is not None and has_cuda:
        found.append("cuda")
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


def resolve(backend: str | None, x: torch.Tensor) -> str:
    """The backend that runs an op on ``x``; raises for unknown or unavailable names."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend is not None and backend not in AVAILABLE:
        raise RuntimeError(f"backend {backend!r} is not available here; available: {AVAILABLE}")
    on_cuda = x.device.type == "cuda"
    if backend is None:
        if on_cuda:
            backend = next((b for b in GPU_ORDER if b in AVAILABLE), "reference")
        else:
            backend = "cpu" if "cpu" in AVAILABLE else "reference"
    if backend == "cpu" and on_cuda:
        raise ValueError(f"backend 'cpu' needs CPU tensors, got a tensor on {x.device}")
    if backend == "cuda" and not on_cuda:
        raise ValueError(f"backend 'cuda' needs CUDA tensors, got a tensor on {x.device}")
    if backend == "triton" and not on_cuda and not TRITON_INTERPRET:
        raise ValueError(
            f"backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1), got one on {x.device}"
        )
    if x.dtype == torch.float64:
        return "reference"  # the compiled kernels are fp32/bf16/fp16 only
    return backend


_POOL_THREADS = [0]


def cpu_kernels():
    """``auggen._C`` with its OpenMP pool sized like torch's (honours torch.set_num_threads)."""
    n = torch.get_num_threads()
    if n != _POOL_THREADS[0]:
        cpu_ext.set_num_threads(n)
        _POOL_THREADS[0] = n
    return cpu_ext


def _compiling() -> bool:
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
    if _compiling() or any(type(t) not in _PLAIN for t in tensors):
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


def triton_kernels(family: str):
    """The launcher module ``auggen.kernels.triton.<family>`` (imports triton on first use)."""
    return importlib.import_module(f"auggen.kernels.triton.{family}")


def check_cuda(err: int) -> None:
    """Turn a cudaError_t returned by a launcher into a RuntimeError."""
    if err != 0:
        raise RuntimeError(f"auggen CUDA kernel failed: {cuda_ext.error_string(err)} ({err})")


def cuda_stream(x: torch.Tensor) -> int:
    return torch.cuda.current_stream(x.device).cuda_stream
