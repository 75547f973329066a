"""Triton kernels for mp_silu and mp_sum(+clamp), forward and backward, on flat dense memory.

Launchers take tensors already brought to one layout by auggen.ops.elementwise; math in fp32.
"""

import triton
import triton.language as tl
from auggen.kernels.triton.launch import on_device

BLOCK = 1024
MP_SILU_SCALE = 1.0 / 0.596


@triton.jit
def _mp_silu_fwd_kernel(x_ptr, y_ptr, n, SCALE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m).to(tl.float32)
    y = x * tl.sigmoid(x) * SCALE
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _mp_silu_bwd_kernel(g_ptr, x_ptr, gx_ptr, n, SCALE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    g = tl.load(g_ptr + offs, mask=m).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=m).to(tl.float32)
    s = tl.sigmoid(x)
    gx = g * s * (1.0 + x * (1.0 - s)) * SCALE
    tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=m)


@triton.jit
def _mp_sum_fwd_kernel(
    a_ptr, b_ptr, y_ptr, n, ca, cb, clip, CLAMP: tl.constexpr, BLOCK: tl.constexpr
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    a = tl.load(a_ptr + offs, mask=m).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=m).to(tl.float32)
    y = ca * a + cb * b
    if CLAMP:  # keeps NaN like torch.clamp
        y = tl.where(y < -clip, -clip, tl.where(y > clip, clip, y))
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _mp_sum_bwd_kernel(
    g_ptr, a_ptr, b_ptr, ga_ptr, gb_ptr, n, ca, cb, clip, CLAMP: tl.constexpr, BLOCK: tl.constexpr
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    g = tl.load(g_ptr + offs, mask=m).to(tl.float32)
    if CLAMP:  # torch.clamp passes the gradient where -clip <= v <= clip
        a = tl.load(a_ptr + offs, mask=m).to(tl.float32)
        b = tl.load(b_ptr + offs, mask=m).to(tl.float32)
        v = ca * a + cb * b
        g = tl.where((v >= -clip) & (v <= clip), g, 0.0)
    tl.store(ga_ptr + offs, (ca * g).to(ga_ptr.dtype.element_ty), mask=m)
    tl.store(gb_ptr + offs, (cb * g).to(gb_ptr.dtype.element_ty), mask=m)


def _grid(n: int):
    return (triton.cdiv(n, BLOCK),)


def mp_sum_coeffs(t: float) -> tuple[float, float]:
    inv = 1.0 / ((1.0 - t) ** 2 + t**2) ** 0.5
    return (1.0 - t) * inv, t * inv


def mp_silu_fwd(x, y):
    with on_device("mp_silu_fwd", x):
        _mp_silu_fwd_kernel[_grid(x.numel())](x, y, x.numel(), SCALE=MP_SILU_SCALE, BLOCK=BLOCK)


def mp_silu_bwd(g, x, gx):
    n = x.numel()
    with on_device("mp_silu_bwd", x):
        _mp_silu_bwd_kernel[_grid(n)](g, x, gx, n, SCALE=MP_SILU_SCALE, BLOCK=BLOCK)


def mp_sum_fwd(a, b, y, t: float, clamp: bool, clip: float):
    ca, cb = mp_sum_coeffs(t)
    n = a.numel()
    with on_device("mp_sum_fwd", a):
        _mp_sum_fwd_kernel[_grid(n)](a, b, y, n, ca, cb, float(clip), CLAMP=clamp, BLOCK=BLOCK)


def mp_sum_bwd(g, a, b, ga, gb, t: float, clamp: bool, clip: float):
    ca, cb = mp_sum_coeffs(t)
    n = g.numel()
    a = g if a is None else a  # unread when not clamping
    b = g if b is None else b
    with on_device("mp_sum_bwd", g):
        _mp_sum_bwd_kernel[_grid(n)](
            g, a, b, ga, gb, n, ca, cb, float(clip), CLAMP=clamp, BLOCK=BLOCK
        )
