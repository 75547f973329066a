"""Triton kernels for pixel_norm (+ fused mp_silu), forward and backward.

The tensor is the canonical (outer, C, inner) view; a program owns BLOCK_R "rows" (one row
= one (o, i) pair) and sweeps C in BLOCK_C chunks: element (r, c) sits at
o * C * inner + c * inner + i. Contiguous along C when inner == 1, along rows otherwise.
Backward: dx = s g - s^2 x (g . x) / (C r), g = dn + ds * mp_silu'(n).
"""

import triton
import triton.language as tl

MP_SILU_SCALE = 1.0 / 0.596


@triton.jit
def _offsets(pid, c0, rows, C, inner, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    r = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = c0 + tl.arange(0, BLOCK_C)
    base = (r // inner) * C * inner + r % inner
    offs = base[:, None] + c[None, :].to(tl.int64) * inner
    mask = (r < rows)[:, None] & (c < C)[None, :]
    return offs, mask


@triton.jit
def _sumsq(x_ptr, pid, rows, C, inner, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    acc = tl.zeros((BLOCK_R,), tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs, m = _offsets(pid, c0, rows, C, inner, BLOCK_R, BLOCK_C)
        v = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        acc += tl.sum(v * v, axis=1)
    return acc


@triton.jit
def _pixel_norm_fwd_kernel(
    x_ptr, y_ptr, z_ptr, rows, C, inner, eps,
    HAS_Z: tl.constexpr, SCALE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    ss = _sumsq(x_ptr, pid, rows, C, inner, BLOCK_R, BLOCK_C)
    s = 1.0 / (eps + tl.sqrt(ss / C))
    for c0 in range(0, C, BLOCK_C):
        offs, m = _offsets(pid, c0, rows, C, inner, BLOCK_R, BLOCK_C)
        n = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32) * s[:, None]
        tl.store(y_ptr + offs, n.to(y_ptr.dtype.element_ty), mask=m)
        if HAS_Z:
            z = n * tl.sigmoid(n) * SCALE
            tl.store(z_ptr + offs, z.to(z_ptr.dtype.element_ty), mask=m)


@triton.jit
def _grad_n(
    gy_ptr, gz_ptr, offs, m, n, HAS_GY: tl.constexpr, HAS_GZ: tl.constexpr, SCALE: tl.constexpr
):
    g = tl.zeros(n.shape, tl.float32)
    if HAS_GY:
        g += tl.load(gy_ptr + offs, mask=m, other=0.0).to(tl.float32)
    if HAS_GZ:
        sg = tl.sigmoid(n)
        gz = tl.load(gz_ptr + offs, mask=m, other=0.0).to(tl.float32)
        g += gz * sg * (1.0 + n * (1.0 - sg)) * SCALE
    return g


@triton.jit
def _pixel_norm_bwd_kernel(
    x_ptr, gy_ptr, gz_ptr, gx_ptr, rows, C, inner, eps,
    HAS_GY: tl.constexpr, HAS_GZ: tl.constexpr, SCALE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    ss = _sumsq(x_ptr, pid, rows, C, inner, BLOCK_R, BLOCK_C)
    r = tl.sqrt(ss / C)
    s = 1.0 / (eps + r)
    dot = tl.zeros((BLOCK_R,), tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs, m = _offsets(pid, c0, rows, C, inner, BLOCK_R, BLOCK_C)
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        g = _grad_n(gy_ptr, gz_ptr, offs, m, x * s[:, None], HAS_GY, HAS_GZ, SCALE)
        dot += tl.sum(g * x, axis=1)
    k = tl.where(r > 0, s * s * dot / (C * tl.where(r > 0, r, 1.0)), 0.0)
    for c0 in range(0, C, BLOCK_C):
        offs, m = _offsets(pid, c0, rows, C, inner, BLOCK_R, BLOCK_C)
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        g = _grad_n(gy_ptr, gz_ptr, offs, m, x * s[:, None], HAS_GY, HAS_GZ, SCALE)
        gx = s[:, None] * g - k[:, None] * x
        tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=m)


def _blocks(rows: int, C: int, inner: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_C): wide along whichever axis is contiguous in memory."""
    if inner == 1:  # each row is contiguous over C
        block_c = min(triton.next_power_of_2(C), 1024)
        block_r = max(1, min(triton.next_power_of_2(rows), 4096 // block_c))
    else:  # adjacent rows are adjacent in memory
        block_r = min(triton.next_power_of_2(rows), 128)
        block_c = min(triton.next_power_of_2(C), max(1, 4096 // block_r))
    return block_r, block_c


def pixel_norm_fwd(x, y, z, outer: int, C: int, inner: int, eps: float):
    rows = outer * inner
    br, bc = _blocks(rows, C, inner)
    _pixel_norm_fwd_kernel[(triton.cdiv(rows, br),)](
        x, y, y if z is None else z, rows, C, inner, float(eps),
        HAS_Z=z is not None, SCALE=MP_SILU_SCALE, BLOCK_R=br, BLOCK_C=bc,
    )  # fmt: skip


def pixel_norm_bwd(x, gy, gz, gx, outer: int, C: int, inner: int, eps: float):
    rows = outer * inner
    br, bc = _blocks(rows, C, inner)
    _pixel_norm_bwd_kernel[(triton.cdiv(rows, br),)](
        x, x if gy is None else gy, x if gz is None else gz, gx, rows, C, inner, float(eps),
        HAS_GY=gy is not None, HAS_GZ=gz is not None, SCALE=MP_SILU_SCALE,
        BLOCK_R=br, BLOCK_C=bc,
    )  # fmt: skip
