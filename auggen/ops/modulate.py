"""modulated_mp_silu: ``mp_silu(y * c)`` with c of shape (N, C) broadcast over the spatial
dims of y (N, C, ...): EDM2's block modulation. Custom ops ``auggen::modulated_mp_silu`` and
``auggen::modulated_mp_silu_backward`` (dy and dc = sum over space of dz * y, one pass).
"""

import torch

from auggen.ops import reference as _ref
from auggen.ops._backend import (
    dispatch,
    launch,
    register_autograd,
    resolve,
)
from auggen.ops._layout import dense_like, modulation_geometry
from auggen.ops._validate import check_float


def _geometry(y: torch.Tensor) -> tuple[int, int, int, int]:
    geom = modulation_geometry(y)
    if geom is None:
        raise AssertionError("unreachable: callers bring y to a supported layout first")
    return geom


def _like_output(y: torch.Tensor):
    """(buffer, its (N, S1, C, S2) geometry, empty_like(y)): the buffer is empty_like(y)
    itself unless that layout interleaves N and C (then a contiguous one)."""
    like = torch.empty_like(y)
    geom = modulation_geometry(like)
    if geom is not None:
        return like, geom, like
    out = torch.empty(y.shape, dtype=y.dtype, device=y.device)
    return out, _geometry(out), like


def _launch(backend, name, tensors, geom):
    launch(backend, "modulate", name, tensors, geom)


@torch.library.custom_op("auggen::modulated_mp_silu", mutates_args=())
def modulated_mp_silu_op(y: torch.Tensor, c: torch.Tensor, backend: str) -> torch.Tensor:
    if not y.numel():
        return torch.empty_like(y)
    out, geom, like = _like_output(y)
    c = c.to(y.dtype).contiguous()
    _launch(backend, "modulated_mp_silu_fwd", [dense_like(y, out), c, out], geom)
    return out if out is like else like.copy_(out)


@torch.library.custom_op("auggen::modulated_mp_silu_backward", mutates_args=())
def modulated_mp_silu_backward_op(
    grad: torch.Tensor, y: torch.Tensor, c: torch.Tensor, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    gc = torch.empty(c.shape, dtype=y.dtype, device=y.device)
    if not y.numel():
        return torch.empty_like(y), gc.zero_()
    gy, geom, like = _like_output(y)
    cc = c.to(y.dtype).contiguous()
    tensors = [dense_like(grad, gy), dense_like(y, gy), cc, gy, gc]
    _launch(backend, "modulated_mp_silu_bwd", tensors, geom)
    return (gy if gy is like else like.copy_(gy)), gc


@modulated_mp_silu_op.register_fake
def _(y, c, backend):
    return torch.empty_like(y)


@modulated_mp_silu_backward_op.register_fake
def _(grad, y, c, backend):
    return torch.empty_like(y), y.new_empty(c.shape)


def _setup(ctx, inputs, output):
    y, c, ctx.backend = inputs
    ctx.save_for_backward(y, c)


def _backward(ctx, grad):
    y, c = ctx.saved_tensors
    gy, gc = dispatch(modulated_mp_silu_backward_op, grad, y, c)(grad, y, c, ctx.backend)
    return gy, gc.to(c.dtype), None


register_autograd(modulated_mp_silu_op, _backward, _setup)


def modulated_mp_silu(
    y: torch.Tensor,
    c: torch.Tensor,
    backend: str | None = None,
) -> torch.Tensor:
    """``mp_silu(y * c[:, :, None, ...])`` with c of shape (N, C)."""
    check_float("y", y)
    check_float("c", c)
    if y.ndim < 2 or c.shape != y.shape[:2]:
        raise ValueError(f"c must have shape (N, C) = {tuple(y.shape[:2])}, got {tuple(c.shape)}")
    if c.device != y.device:
        raise ValueError(f"c must be on the device of y ({y.device}), got {c.device}")
    backend = resolve(backend, y)
    if backend == "reference":
        return _ref.modulated_mp_silu_ref(y, c)
    return dispatch(modulated_mp_silu_op, y, c)(y, c.to(y.dtype), backend)
