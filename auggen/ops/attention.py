"""EDM2 self-attention ``mp_attention``: per-head pixel norm of q, k, v, then softmax attention.

``mp_attention(q, k, v) = softmax(q̂ k̂ᵀ / sqrt(D)) v̂`` with ``x̂ = pixel_norm(x, dim=-1)``
(EDM2 ``Block``: "q, k and v are each normalized over ch"), for (N, heads, L, D) inputs.

Backends:
- ``"reference"``: the unfused definition, plain PyTorch (``mp_attention_ref``);
- ``"cpu"``: normalise, then ``F.scaled_dot_product_attention`` (plain PyTorch, any device);
- ``"triton"``: the fused flash-attention kernel of ``auggen.kernels.triton.attention`` behind
  the custom op ``auggen::mp_attention`` (returns out and the per-row logsumexp; CUDA tensors,
  or CPU tensors under ``TRITON_INTERPRET=1``), differentiable, traceable by
  ``torch.compile(fullgraph=True)``.
- ``"cuda"``: accepted for CUDA tensors and runs ``"triton"`` (there is no separate CUDA kernel).
``backend=None`` picks ``"triton"`` for CUDA fp16/bf16/fp32 tensors when Triton imports and
passed its self-test, else ``"cpu"`` (the resolver of every op, ``_backend.resolve``, with
this op's ``KERNELS``); CPU tensors never go to the (slow) interpreter unless asked for by
name. fp64 on ``"triton"``/``"cuda"`` runs the reference, as the other ops do.
"""

import math

import torch
import torch.nn.functional as F

from auggen.ops import _backend
from auggen.ops._backend import dispatch, launch, register_autograd
from auggen.ops._validate import check_float, check_same_shape

ATTENTION_BACKENDS = _backend.BACKENDS
EPS = 1e-4  # EDM2 ``normalize`` default
PRECISIONS = ("ieee", "tf32", "bf16")  # products of fp32 inputs in the Triton kernel


def _pixel_norm_heads(x: torch.Tensor) -> torch.Tensor:
    """EDM2 ``normalize`` along D: ``x / (eps + ||x|| / sqrt(D))``, norm in fp32 (fp64 for fp64)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=acc)
    return x / torch.add(EPS, norm, alpha=1.0 / math.sqrt(x.shape[-1])).to(x.dtype)


def mp_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Definition: pixel-norm q, k, v along D, then ``softmax(q kᵀ / sqrt(D)) v`` explicitly."""
    q, k, v = (_pixel_norm_heads(t) for t in (q, k, v))
    w = torch.matmul(q, k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
    return torch.matmul(w, v)


def _mp_attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if (
        q.device.type == "cpu"
        and q.dtype in (torch.bfloat16, torch.float16)
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
    ):
        # torch's CPU flash-attention backward in bf16 took 15x its fp32 time (35 vs 2.3 ms
        # at (32, 1, 64, 64), torch 2.13): train through the fp32 kernel (fp32 products and
        # accumulation, as bf16 would accumulate anyway), the output back in q's dtype.
        with torch.autocast("cpu", enabled=False):
            out = _mp_attention_sdpa(q.float(), k.float(), v.float())
        return out.to(q.dtype)
    q, k, v = (_pixel_norm_heads(t) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v)  # default scale is 1/sqrt(D)


# The one resolver (``_backend.resolve``) with what this op has: a Triton kernel; "cuda" runs
# it (no hand-written CUDA attention); "cpu" and what no kernel takes: normalise + SDPA.
KERNELS = _backend.Kernels(compiled=("triton",), stand_in=(("cuda", "triton"),), fallback="cpu")


def resolve_backend(backend: str | None, q: torch.Tensor) -> str:
    """The implementation that ``mp_attention`` runs for ``q``: reference | cpu | triton
    (``_backend.resolve`` with this op's ``KERNELS``)."""
    return _backend.resolve(backend, q, KERNELS)


# --- custom op: forward and backward both opaque to autograd/compile, glued by autograd ---


@torch.library.custom_op(
    "auggen::mp_attention",
    mutates_args=(),
    schema="(Tensor q, Tensor k, Tensor v, float eps, str precision) -> (Tensor, Tensor)",
)
def _fwd_op(q, k, v, eps, precision):
    return launch("triton", "attention", "mp_attention_fwd", (q, k, v), (eps,), precision=precision)


@_fwd_op.register_fake
def _fwd_fake(q, k, v, eps, precision):
    out = q.new_empty(q.shape)
    lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
    return out, lse


@torch.library.custom_op(
    "auggen::mp_attention_backward",
    mutates_args=(),
    schema=(
        "(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? dlse, "
        "float eps, str precision) -> (Tensor, Tensor, Tensor)"
    ),
)
def _bwd_op(dout, q, k, v, out, lse, dlse, eps, precision):
    tensors = (dout, q, k, v, out, lse, dlse)
    return launch("triton", "attention", "mp_attention_bwd", tensors, (eps,), precision=precision)


@_bwd_op.register_fake
def _bwd_fake(dout, q, k, v, out, lse, dlse, eps, precision):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, eps, precision = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.eps, ctx.precision = eps, precision


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv = dispatch(_bwd_op, dout, q, k, v, out, lse, dlse)(
        dout, q, k, v, out, lse, dlse, ctx.eps, ctx.precision
    )
    return dq, dk, dv, None, None


register_autograd(_fwd_op, _backward, _setup_context)


def mp_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: str | None = None,
    precision: str | None = None,
) -> torch.Tensor:
    """EDM2 attention on (N, heads, L, D) q, k, v; returns (N, heads, L, D) in q's dtype.

    ``precision`` (Triton kernel, fp32 inputs only): "ieee", "tf32" or "bf16" products with
    fp32 accumulation; None follows ``torch.get_float32_matmul_precision()`` ("highest" ->
    ieee, "high" -> tf32, "medium" -> bf16), as torch's own fp32 matmuls do.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or None, got {precision!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float(name, t)
        if t.ndim != 4:
            raise ValueError(f"{name} must be 4-d (N, heads, L, D), got shape {tuple(t.shape)}")
    check_same_shape("q", q, "k", k)
    check_same_shape("q", q, "v", v)
    if q.shape[-1] == 0:
        raise ValueError(f"q must have a head dim D >= 1, got shape {tuple(q.shape)}")
    chosen = resolve_backend(backend, q)
    if chosen == "reference":
        return mp_attention_ref(q, k, v)
    if chosen == "cpu":
        return _mp_attention_sdpa(q, k, v)
    # "auto" is resolved inside the op at run time (dynamo cannot trace the torch setting)
    return dispatch(_fwd_op, q, k, v)(q, k, v, EPS, precision or "auto")[0]


__all__ = [
    "ATTENTION_BACKENDS",
    "PRECISIONS",
    "mp_attention",
    "mp_attention_ref",
    "resolve_backend",
]
