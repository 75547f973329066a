"""Triton kernels for modulated_mp_silu = mp_silu(y * c), forward and backward.

y is the (N, S1, C, S2) view with c[n * C + ch]: element (n, s1, ch, s2) at
((n * S1 + s1) * C + ch) * S2 + s2. The backward program owns (n, BLOCK_C channels), sweeps
the S1 * S2 spatial positions once, writes dy and reduces dc without atomics.
"""

import triton
import triton.language as tl
from auggen.kernels.triton.launch import on_device

MP_SILU_SCALE = 1.0 / 0.596


@triton.jit
def _fwd_kernel(y_ptr, c_ptr, out_ptr, total, S1, C, S2, SCALE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    ch = (offs // S2) % C
    n = offs // (S1 * C * S2)
    cv = tl.load(c_ptr + n * C + ch, mask=m, other=0.0).to(tl.float32)
    z = tl.load(y_ptr + offs, mask=m, other=0.0).to(tl.float32) * cv
    tl.store(out_ptr + offs, (z * tl.sigmoid(z) * SCALE).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bwd_kernel(
    g_ptr, y_ptr, c_ptr, gy_ptr, gc_ptr, S1, C, S2,
    SCALE: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0).to(tl.int64)
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = ch < C
    cv = tl.load(c_ptr + n * C + ch, mask=cmask, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_C,), tl.float32)
    for s0 in range(0, S1 * S2, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        s1 = s // S2
        s2 = s % S2
        offs = ((n * S1 + s1[:, None]) * C + ch[None, :]) * S2 + s2[:, None]
        m = (s < S1 * S2)[:, None] & cmask[None, :]
        y = tl.load(y_ptr + offs, mask=m, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
        z = y * cv[None, :]
        sg = tl.sigmoid(z)
        gz = g * sg * (1.0 + z * (1.0 - sg)) * SCALE
        tl.store(gy_ptr + offs, (gz * cv[None, :]).to(gy_ptr.dtype.element_ty), mask=m)
        acc += tl.sum(gz * y, axis=0)
    tl.store(gc_ptr + n * C + ch, acc.to(gc_ptr.dtype.element_ty), mask=cmask)


def modulated_mp_silu_fwd(y, c, out, N: int, S1: int, C: int, S2: int):
    total = y.numel()
    block = 1024
    with on_device("modulated_mp_silu_fwd", y):
        _fwd_kernel[(triton.cdiv(total, block),)](
            y, c, out, total, S1, C, S2, SCALE=MP_SILU_SCALE, BLOCK=block
        )


def modulated_mp_silu_bwd(g, y, c, gy, gc, N: int, S1: int, C: int, S2: int):
    block_c = min(triton.next_power_of_2(C), 64)
    block_s = max(1, min(triton.next_power_of_2(S1 * S2), 4096 // block_c))
    with on_device("modulated_mp_silu_bwd", y):
        _bwd_kernel[(N, triton.cdiv(C, block_c))](
            g, y, c, gy, gc, S1, C, S2, SCALE=MP_SILU_SCALE, BLOCK_S=block_s, BLOCK_C=block_c
        )
