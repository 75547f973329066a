"""Elementwise magnitude-preserving ops: mp_silu, mp_sum and mp_sum_clamp (the block
epilogue ``clamp(mp_sum(a, b, t), -clip, clip)``). Custom ops ``auggen::mp_silu``,
``auggen::mp_sum``, ``auggen::mp_sum_clamp`` and their backward ops.

Kernels run on flat memory: every input is brought to the layout of the output
``empty_like(first input)``, so channels-last tensors are processed without a copy.
"""

import torch

from auggen.ops import reference as _ref
from auggen.ops._backend import (
    dispatch,
    launch,
    register_autograd,
    resolve,
)
from auggen.ops._layout import dense_like
from auggen.ops._validate import check_float, check_same_shape, check_unit_interval

# ---- launchers: (backend, dense tensors of one layout) -> writes the outputs ----------------


def _launch(backend: str, name: str, *tensors, scalars=()):
    """Kernel ``name`` on ``tensors`` (None -> a null pointer), the native ones given numel."""
    launch(backend, "elementwise", name, tensors, scalars, numel=True)


# ---- mp_silu ----------------------------------------------------------------------------------


@torch.library.custom_op("auggen::mp_silu", mutates_args=())
def mp_silu_op(x: torch.Tensor, backend: str) -> torch.Tensor:
    y = torch.empty_like(x)
    if x.numel():
        _launch(backend, "mp_silu_fwd", dense_like(x, y), y)
    return y


@torch.library.custom_op("auggen::mp_silu_backward", mutates_args=())
def mp_silu_backward_op(grad: torch.Tensor, x: torch.Tensor, backend: str) -> torch.Tensor:
    gx = torch.empty_like(x)
    if x.numel():
        _launch(backend, "mp_silu_bwd", dense_like(grad, gx), dense_like(x, gx), gx)
    return gx


@mp_silu_op.register_fake
def _(x, backend):
    return torch.empty_like(x)


@mp_silu_backward_op.register_fake
def _(grad, x, backend):
    return torch.empty_like(x)


def _mp_silu_setup(ctx, inputs, output):
    x, ctx.backend = inputs
    ctx.save_for_backward(x)


def _mp_silu_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return dispatch(mp_silu_backward_op, grad, x)(grad, x, ctx.backend), None


register_autograd(mp_silu_op, _mp_silu_backward, _mp_silu_setup)


# ---- mp_sum / mp_sum_clamp ------------------------------------------------------------------


def _sum_forward(a, b, t, clamp, clip, backend):
    y = torch.empty_like(a)
    if a.numel():
        _launch(
            backend, "mp_sum_fwd", dense_like(a, y), dense_like(b, y), y, scalars=(t, clamp, clip)
        )
    return y


def _sum_backward(grad, a, b, t, clamp, clip, backend):
    ga = torch.empty_like(grad)
    gb = torch.empty_like(grad)
    if grad.numel():
        a = None if a is None else dense_like(a, ga)
        b = None if b is None else dense_like(b, ga)
        g = dense_like(grad, ga)
        _launch(backend, "mp_sum_bwd", g, a, b, ga, gb, scalars=(t, clamp, clip))
    return ga, gb


@torch.library.custom_op("auggen::mp_sum", mutates_args=())
def mp_sum_op(a: torch.Tensor, b: torch.Tensor, t: float, backend: str) -> torch.Tensor:
    return _sum_forward(a, b, t, False, 0.0, backend)


@torch.library.custom_op("auggen::mp_sum_backward", mutates_args=())
def mp_sum_backward_op(
    grad: torch.Tensor, t: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return _sum_backward(grad, None, None, t, False, 0.0, backend)


@torch.library.custom_op("auggen::mp_sum_clamp", mutates_args=())
def mp_sum_clamp_op(
    a: torch.Tensor, b: torch.Tensor, t: float, clip: float, backend: str
) -> torch.Tensor:
    return _sum_forward(a, b, t, True, clip, backend)


@torch.library.custom_op("auggen::mp_sum_clamp_backward", mutates_args=())
def mp_sum_clamp_backward_op(
    grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor, t: float, clip: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return _sum_backward(grad, a, b, t, True, clip, backend)


@mp_sum_op.register_fake
def _(a, b, t, backend):
    return torch.empty_like(a)


@mp_sum_backward_op.register_fake
def _(grad, t, backend):
    return torch.empty_like(grad), torch.empty_like(grad)


@mp_sum_clamp_op.register_fake
def _(a, b, t, clip, backend):
    return torch.empty_like(a)


@mp_sum_clamp_backward_op.register_fake
def _(grad, a, b, t, clip, backend):
    return torch.empty_like(grad), torch.empty_like(grad)


def _mp_sum_setup(ctx, inputs, output):
    _, _, ctx.t, ctx.backend = inputs


def _mp_sum_backward(ctx, grad):
    ga, gb = dispatch(mp_sum_backward_op, grad)(grad, ctx.t, ctx.backend)
    return ga, gb, None, None


def _mp_sum_clamp_setup(ctx, inputs, output):
    a, b, ctx.t, ctx.clip, ctx.backend = inputs
    ctx.save_for_backward(a, b)


def _mp_sum_clamp_backward(ctx, grad):
    a, b = ctx.saved_tensors
    ga, gb = dispatch(mp_sum_clamp_backward_op, grad, a, b)(
        grad, a, b, ctx.t, ctx.clip, ctx.backend
    )
    return ga, gb, None, None, None


register_autograd(mp_sum_op, _mp_sum_backward, _mp_sum_setup)
register_autograd(mp_sum_clamp_op, _mp_sum_clamp_backward, _mp_sum_clamp_setup)


# ---- public functions -------------------------------------------------------------------------


def mp_silu(x: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """EDM2 mp_silu: ``silu(x) / 0.596``."""
    check_float("x", x)
    backend = resolve(backend, x)
    if backend == "reference":
        return _ref.mp_silu_ref(x)
    return dispatch(mp_silu_op, x)(x, backend)


def _check_pair(a, b, t):
    check_float("a", a)
    check_float("b", b)
    check_same_shape("a", a, "b", b)
    return check_unit_interval("t", t)


def mp_sum(
    a: torch.Tensor,
    b: torch.Tensor,
    t: float = 0.5,
    backend: str | None = None,
) -> torch.Tensor:
    """EDM2 mp_sum: ``lerp(a, b, t) / sqrt((1 - t)^2 + t^2)``."""
    t = _check_pair(a, b, t)
    backend = resolve(backend, a)
    if backend == "reference":
        return _ref.mp_sum_ref(a, b, t)
    return dispatch(mp_sum_op, a, b)(a, b, t, backend)


def mp_sum_clamp(
    a: torch.Tensor,
    b: torch.Tensor,
    t: float = 0.5,
    clip: float = 256.0,
    backend: str | None = None,
) -> torch.Tensor:
    """EDM2 block epilogue: ``clamp(mp_sum(a, b, t), -clip, clip)``."""
    t = _check_pair(a, b, t)
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    backend = resolve(backend, a)
    if backend == "reference":
        return _ref.mp_sum_clamp_ref(a, b, t, clip)
    return dispatch(mp_sum_clamp_op, a, b)(a, b, t, float(clip), backend)
