"""Triton kernels for pixel_norm (+ fused mp_silu), forward and backward.

The tensor is the canonical (outer, C, inner) view; a program owns BLOCK_R "rows" (one row
= one (o, i) pair; with inner > 1 all of one o) and sweeps C in BLOCK_C chunks: element
(r, c) sits at o * C * inner + c * inner + i. Contiguous along C when inner == 1, along rows
otherwise.
Backward: dx = s g - s^2 x (g . x) / (C r), g = dn + ds * mp_silu'(n).
"""

import triton
import triton.language as tl
from auggen.kernels.triton.launch import on_device

MP_SILU_SCALE = 1.0 / 0.596


@triton.jit
def _offsets(pid, c0, rows, C, inner, tiles, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
             ALIGN: tl.constexpr):  # fmt: skip
    """Offsets and mask of the (BLOCK_R, BLOCK_C) tile at channel c0 of program ``pid``.

    inner == 1: BLOCK_R rows, each contiguous over C. inner > 1: program = (o, column tile),
    BLOCK_R adjacent columns of one o, so the rows of a tile are contiguous and start at a
    multiple of ALIGN elements (inner % ALIGN == 0): vector loads even when HW % 16 != 0.
    """
    c = c0 + tl.arange(0, BLOCK_C)
    if ALIGN == 0:  # inner == 1
        r = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
        offs = r[:, None] * C + c[None, :].to(tl.int64)
        mask = (r < rows)[:, None] & (c < C)[None, :]
    else:
        inner = tl.multiple_of(inner, ALIGN)
        o = (pid // tiles).to(tl.int64)
        i = (pid % tiles) * BLOCK_R + tl.arange(0, BLOCK_R)
        i = tl.max_contiguous(tl.multiple_of(i, BLOCK_R), BLOCK_R)
        offs = (o * C * inner + i)[:, None] + c[None, :].to(tl.int64) * inner
        mask = (i < inner)[:, None] & (c < C)[None, :]
    return offs, mask


@triton.jit
def _sumsq(
    x_ptr,
    pid,
    rows,
    C,
    inner,
    tiles,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ALIGN: tl.constexpr,
):
    acc = tl.zeros((BLOCK_R,), tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs, m = _offsets(pid, c0, rows, C, inner, tiles, BLOCK_R, BLOCK_C, ALIGN)
        v = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        acc += tl.sum(v * v, axis=1)
    return acc


@triton.jit
def _pixel_norm_fwd_kernel(
    x_ptr, y_ptr, z_ptr, rows, C, inner, tiles, eps,
    HAS_Z: tl.constexpr, SCALE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ALIGN: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    ss = _sumsq(x_ptr, pid, rows, C, inner, tiles, BLOCK_R, BLOCK_C, ALIGN)
    s = 1.0 / (eps + tl.sqrt(ss / C))
    for c0 in range(0, C, BLOCK_C):
        offs, m = _offsets(pid, c0, rows, C, inner, tiles, BLOCK_R, BLOCK_C, ALIGN)
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
    x_ptr, gy_ptr, gz_ptr, gx_ptr, rows, C, inner, tiles, eps,
    HAS_GY: tl.constexpr, HAS_GZ: tl.constexpr, SCALE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ALIGN: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    ss = _sumsq(x_ptr, pid, rows, C, inner, tiles, BLOCK_R, BLOCK_C, ALIGN)
    r = tl.sqrt(ss / C)
    s = 1.0 / (eps + r)
    dot = tl.zeros((BLOCK_R,), tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs, m = _offsets(pid, c0, rows, C, inner, tiles, BLOCK_R, BLOCK_C, ALIGN)
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        g = _grad_n(gy_ptr, gz_ptr, offs, m, x * s[:, None], HAS_GY, HAS_GZ, SCALE)
        dot += tl.sum(g * x, axis=1)
    k = tl.where(r > 0, s * s * dot / (C * tl.where(r > 0, r, 1.0)), 0.0)
    for c0 in range(0, C, BLOCK_C):
        offs, m = _offsets(pid, c0, rows, C, inner, tiles, BLOCK_R, BLOCK_C, ALIGN)
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        g = _grad_n(gy_ptr, gz_ptr, offs, m, x * s[:, None], HAS_GY, HAS_GZ, SCALE)
        gx = s[:, None] * g - k[:, None] * x
        tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=m)


def launch_config(outer: int, C: int, inner: int, warps: int = 4) -> tuple[tuple[int], dict]:
    """(grid, constexprs and options): wide along whichever axis is contiguous in memory.

    Tiles hold at most 2048 elements per program: 16 per thread and tensor with 4 warps
    (forward), 8 with the backward's 8 warps, whose x, dy, dz tiles then fit in registers.
    """
    if inner == 1:  # each row is contiguous over C
        block_c = min(triton.next_power_of_2(C), 1024)
        block_r = max(1, min(triton.next_power_of_2(outer), 2048 // block_c))
        grid, tiles, align = (triton.cdiv(outer, block_r),), 1, 0
    else:  # adjacent columns (i) are adjacent in memory
        block_r = min(triton.next_power_of_2(inner), 128)
        block_c = min(triton.next_power_of_2(C), max(1, 2048 // block_r))
        tiles = triton.cdiv(inner, block_r)
        align = min(inner & -inner, 16)  # largest power of two dividing inner, capped
        grid = (outer * tiles,)
    consts = dict(BLOCK_R=block_r, BLOCK_C=block_c, ALIGN=align, num_warps=warps)
    return grid, dict(consts, tiles=tiles)


def pixel_norm_fwd(x, y, z, outer: int, C: int, inner: int, eps: float):
    grid, cfg = launch_config(outer, C, inner)
    with on_device("pixel_norm_fwd", x):
        _pixel_norm_fwd_kernel[grid](
            x, y, y if z is None else z, outer * inner, C, inner, eps=float(eps),
            HAS_Z=z is not None, SCALE=MP_SILU_SCALE, **cfg,
        )  # fmt: skip


def pixel_norm_bwd(x, gy, gz, gx, outer: int, C: int, inner: int, eps: float):
    grid, cfg = launch_config(outer, C, inner, warps=8)
    with on_device("pixel_norm_bwd", x):
        _pixel_norm_bwd_kernel[grid](
            x, x if gy is None else gy, x if gz is None else gz, gx, outer * inner, C, inner,
            eps=float(eps), HAS_GY=gy is not None, HAS_GZ=gz is not None, SCALE=MP_SILU_SCALE,
            **cfg,
        )  # fmt: skip
