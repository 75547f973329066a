"""pixel_norm and pixel_norm_silu: EDM2 ``normalize`` along one dim, optionally fused with
mp_silu (the encoder-block prologue returns both). Custom ops ``auggen::pixel_norm``,
``auggen::pixel_norm_silu`` and their shared backward ``auggen::pixel_norm_backward``.

Backward of n = x * s, s = 1 / (eps + ||x|| / sqrt(C)):
dx = s g - s^2 x (g . x) / (C r), with g = dn + ds * mp_silu'(n).
"""

from typing import Optional

import torch

from auggen.ops import reference as _ref
from auggen.ops._backend import (
    dispatch,
    launch,
    register_autograd,
    resolve,
)
from auggen.ops._layout import dense_like, reduction_geometry
from auggen.ops._validate import check_dim, check_float


def _launch_fwd(backend, x, y, z, dim, eps):
    launch(backend, "pixel_norm", "pixel_norm_fwd", (x, y, z), (*reduction_geometry(x, dim), eps))


def _forward(x, dim, eps, backend, with_silu):
    y = torch.empty_like(x)
    z = torch.empty_like(x) if with_silu else None
    if x.numel():
        _launch_fwd(backend, dense_like(x, y), y, z, dim, eps)
    return y, z


@torch.library.custom_op("auggen::pixel_norm", mutates_args=())
def pixel_norm_op(x: torch.Tensor, dim: int, eps: float, backend: str) -> torch.Tensor:
    return _forward(x, dim, eps, backend, with_silu=False)[0]


@torch.library.custom_op("auggen::pixel_norm_silu", mutates_args=())
def pixel_norm_silu_op(
    x: torch.Tensor, dim: int, eps: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward(x, dim, eps, backend, with_silu=True)


@torch.library.custom_op("auggen::pixel_norm_backward", mutates_args=())
def pixel_norm_backward_op(
    grad_n: Optional[torch.Tensor],  # noqa: UP045 (custom_op schema inference needs Optional)
    grad_s: Optional[torch.Tensor],  # noqa: UP045
    x: torch.Tensor,
    dim: int,
    eps: float,
    backend: str,
) -> torch.Tensor:
    gx = torch.empty_like(x)
    if not x.numel():
        return gx
    x = dense_like(x, gx)
    gn = None if grad_n is None else dense_like(grad_n, gx)
    gs = None if grad_s is None else dense_like(grad_s, gx)
    geom = (*reduction_geometry(x, dim), eps)
    launch(backend, "pixel_norm", "pixel_norm_bwd", (x, gn, gs, gx), geom)
    return gx


@pixel_norm_op.register_fake
def _(x, dim, eps, backend):
    return torch.empty_like(x)


@pixel_norm_silu_op.register_fake
def _(x, dim, eps, backend):
    return torch.empty_like(x), torch.empty_like(x)


@pixel_norm_backward_op.register_fake
def _(grad_n, grad_s, x, dim, eps, backend):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, ctx.dim, ctx.eps, ctx.backend = inputs
    ctx.save_for_backward(x)


def _pixel_norm_backward(ctx, grad_n):
    (x,) = ctx.saved_tensors
    gx = dispatch(pixel_norm_backward_op, grad_n, x)(grad_n, None, x, ctx.dim, ctx.eps, ctx.backend)
    return gx, None, None, None


def _pixel_norm_silu_backward(ctx, grad_n, grad_s):
    (x,) = ctx.saved_tensors
    gx = dispatch(pixel_norm_backward_op, grad_n, grad_s, x)(
        grad_n, grad_s, x, ctx.dim, ctx.eps, ctx.backend
    )
    return gx, None, None, None


register_autograd(pixel_norm_op, _pixel_norm_backward, _setup_context)
register_autograd(pixel_norm_silu_op, _pixel_norm_silu_backward, _setup_context)


def pixel_norm(
    x: torch.Tensor,
    dim: int = 1,
    eps: float = 1e-4,
    backend: str | None = None,
) -> torch.Tensor:
    """EDM2 normalize: ``x / (eps + ||x||_2 / sqrt(C))`` along ``dim`` (norm in fp32)."""
    check_float("x", x)
    dim = check_dim("dim", dim, x.ndim)
    backend = resolve(backend, x)
    if backend == "reference":
        return _ref.pixel_norm_ref(x, dim, eps)
    return dispatch(pixel_norm_op, x)(x, dim, float(eps), backend)


def pixel_norm_silu(
    x: torch.Tensor,
    dim: int = 1,
    eps: float = 1e-4,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, mp_silu(n))`` with ``n = pixel_norm(x, dim, eps)``, in one pass."""
    check_float("x", x)
    dim = check_dim("dim", dim, x.ndim)
    backend = resolve(backend, x)
    if backend == "reference":
        return _ref.pixel_norm_silu_ref(x, dim, eps)
    return dispatch(pixel_norm_silu_op, x)(x, dim, float(eps), backend)
