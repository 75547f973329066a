"""Flash attention with EDM2's per-head pixel norm fused in (Triton), forward and backward.

Computes ``O = softmax(q̂ k̂ᵀ / sqrt(D)) v̂`` with ``x̂ = x / (eps + ||x|| / sqrt(D))`` taken
along D for each of q, k, v (EDM2 ``Block`` attention, the norm in fp32). Tiled over L with an
online softmax (Dao et al., FlashAttention-2): no L×L matrix is ever stored. The forward keeps
the per-row logsumexp so the backward can recompute the probabilities tile by tile; the
backward also runs the normalisation's own chain rule, so gradients are for the raw q, k, v.

Inputs are (N, heads, L, D) with any strides; D is padded to a power of two with masks and L
to the block size. Products run in the input dtype with fp32 accumulation. No autograd here:
``auggen.ops.attention`` wraps these launchers into a differentiable custom op.
"""

import contextlib
import math
import os

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _pixel_norm_rows(x, rsqrt_d, eps):
    """Rows of fp32 ``x`` divided by ``r = eps + ||x|| / sqrt(D)``; returns (x̂, r, ||x||)."""
    norm = tl.sqrt(tl.sum(x * x, axis=1))
    r = eps + norm * rsqrt_d
    return x / r[:, None], r, norm


@triton.jit
def _pixel_normalize(x, rsqrt_d, eps):
    """``_pixel_norm_rows`` without the saved statistics."""
    return x / (eps + tl.sqrt(tl.sum(x * x, axis=1)) * rsqrt_d)[:, None]


@triton.jit
def _pixel_norm_rows_bwd(x, dy, r, norm, rsqrt_d):
    """Chain rule of ``y = x / r``: ``dx = dy / r - x · rsqrt_d (dy·x) / (r² ||x||)``."""
    dot = tl.sum(dy * x, axis=1)
    coef = tl.where(norm > 0, dot * rsqrt_d / (r * r * tl.where(norm > 0, norm, 1.0)), 0.0)
    return dy / r[:, None] - x * coef[:, None]


@triton.jit
def _load_rows(base, offs_l, offs_d, s_l, s_d, L, D):
    ptrs = base + offs_l[:, None] * s_l + offs_d[None, :] * s_d
    mask = (offs_l[:, None] < L) & (offs_d[None, :] < D)
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _store_rows(base, val, offs_l, offs_d, D, L):
    # Outputs are contiguous (.., L, D).
    ptrs = base + offs_l[:, None] * D + offs_d[None, :]
    tl.store(ptrs, val, mask=(offs_l[:, None] < L) & (offs_d[None, :] < D))


@triton.jit
def _mp_attention_fwd_kernel(
    Q, K, V, O, LSE,
    sq_n, sq_h, sq_l, sq_d,
    sk_n, sk_h, sk_l, sk_d,
    sv_n, sv_h, sv_l, sv_d,
    H, L, D, rsqrt_d, eps, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, DOT_DTYPE: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    n = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k_base = K + n * sk_n + h * sk_h
    v_base = V + n * sv_n + h * sv_h

    q = _load_rows(Q + n * sq_n + h * sq_h, offs_m, offs_d, sq_l, sq_d, L, D)
    lo = DOT_DTYPE
    qh = _pixel_normalize(q.to(tl.float32), rsqrt_d, eps)
    qh = qh.to(lo)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, L, BLOCK_N):
        cols = start_n + offs_n
        k = _load_rows(k_base, cols, offs_d, sk_l, sk_d, L, D).to(tl.float32)
        v = _load_rows(v_base, cols, offs_d, sv_l, sv_d, L, D).to(tl.float32)
        kh = _pixel_normalize(k, rsqrt_d, eps)
        vh = _pixel_normalize(v, rsqrt_d, eps)
        # Scores in log2 units: exp2(s) == exp(q̂·k̂ / sqrt(D)).
        s = tl.dot(qh, tl.trans(kh.to(lo)), input_precision=PRECISION) * qk_scale
        s = tl.where(cols[None, :] < L, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(lo), vh.to(lo), input_precision=PRECISION)
        m_i = m_new

    acc = acc / l_i[:, None]
    bh_off = pid_bh.to(tl.int64) * L
    _store_rows(O + bh_off * D, acc.to(O.dtype.element_ty), offs_m, offs_d, D, L)
    tl.store(LSE + bh_off + offs_m, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=offs_m < L)


@triton.jit
def _mp_attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    sq_n, sq_h, sq_l, sq_d,
    sk_n, sk_h, sk_l, sk_d,
    sv_n, sv_h, sv_l, sv_d,
    sdo_n, sdo_h, sdo_l, sdo_d,
    H, L, D, rsqrt_d, eps, qk_scale, sm_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, DOT_DTYPE: tl.constexpr,
):  # fmt: skip
    """One program per key block: loops over query blocks, accumulates dk̂ and dv̂."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    n = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_base = Q + n * sq_n + h * sq_h
    do_base = DO + n * sdo_n + h * sdo_h
    bh_off = pid_bh.to(tl.int64) * L

    k_base = K + n * sk_n + h * sk_h
    v_base = V + n * sv_n + h * sv_h
    lo = DOT_DTYPE
    k = _load_rows(k_base, offs_n, offs_d, sk_l, sk_d, L, D).to(tl.float32)
    v = _load_rows(v_base, offs_n, offs_d, sv_l, sv_d, L, D).to(tl.float32)
    kh, rk, nk = _pixel_norm_rows(k, rsqrt_d, eps)
    vh, rv, nv = _pixel_norm_rows(v, rsqrt_d, eps)
    kh_lo = kh.to(lo)
    vh_lo = vh.to(lo)

    dkh = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dvh = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start_m in range(0, L, BLOCK_M):
        rows = start_m + offs_m
        row_ok = rows < L
        q = _load_rows(q_base, rows, offs_d, sq_l, sq_d, L, D).to(tl.float32)
        qh = _pixel_normalize(q, rsqrt_d, eps)
        qh_lo = qh.to(lo)
        do = _load_rows(do_base, rows, offs_d, sdo_l, sdo_d, L, D).to(lo)
        lse = tl.load(LSE + bh_off + rows, mask=row_ok, other=0.0) * 1.4426950408889634
        delta = tl.load(DELTA + bh_off + rows, mask=row_ok, other=0.0)

        s = tl.dot(qh_lo, tl.trans(kh_lo), input_precision=PRECISION) * qk_scale
        p = tl.math.exp2(s - lse[:, None])
        p = tl.where(row_ok[:, None] & (offs_n[None, :] < L), p, 0.0)
        dvh += tl.dot(tl.trans(p.to(lo)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(vh_lo), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dkh += tl.dot(tl.trans(ds.to(lo)), qh_lo, input_precision=PRECISION)

    # Raw k, v are reloaded rather than kept live through the loop (register pressure).
    k = _load_rows(k_base, offs_n, offs_d, sk_l, sk_d, L, D).to(tl.float32)
    v = _load_rows(v_base, offs_n, offs_d, sv_l, sv_d, L, D).to(tl.float32)
    dk = _pixel_norm_rows_bwd(k, dkh * sm_scale, rk, nk, rsqrt_d)
    dv = _pixel_norm_rows_bwd(v, dvh, rv, nv, rsqrt_d)
    _store_rows(DK + bh_off * D, dk.to(DK.dtype.element_ty), offs_n, offs_d, D, L)
    _store_rows(DV + bh_off * D, dv.to(DV.dtype.element_ty), offs_n, offs_d, D, L)


@triton.jit
def _mp_attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    sq_n, sq_h, sq_l, sq_d,
    sk_n, sk_h, sk_l, sk_d,
    sv_n, sv_h, sv_l, sv_d,
    sdo_n, sdo_h, sdo_l, sdo_d,
    H, L, D, rsqrt_d, eps, qk_scale, sm_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, DOT_DTYPE: tl.constexpr,
):  # fmt: skip
    """One program per query block: loops over key blocks, accumulates dq̂ (no atomics)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    n = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k_base = K + n * sk_n + h * sk_h
    v_base = V + n * sv_n + h * sv_h
    bh_off = pid_bh.to(tl.int64) * L
    row_ok = offs_m < L

    q_base = Q + n * sq_n + h * sq_h
    lo = DOT_DTYPE
    q = _load_rows(q_base, offs_m, offs_d, sq_l, sq_d, L, D).to(tl.float32)
    qh, rq, nq = _pixel_norm_rows(q, rsqrt_d, eps)
    qh_lo = qh.to(lo)
    do = _load_rows(DO + n * sdo_n + h * sdo_h, offs_m, offs_d, sdo_l, sdo_d, L, D).to(lo)
    lse = tl.load(LSE + bh_off + offs_m, mask=row_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + bh_off + offs_m, mask=row_ok, other=0.0)

    dqh = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, L, BLOCK_N):
        cols = start_n + offs_n
        k = _load_rows(k_base, cols, offs_d, sk_l, sk_d, L, D).to(tl.float32)
        v = _load_rows(v_base, cols, offs_d, sv_l, sv_d, L, D).to(tl.float32)
        kh = _pixel_normalize(k, rsqrt_d, eps)
        vh = _pixel_normalize(v, rsqrt_d, eps)
        kh_lo = kh.to(lo)
        s = tl.dot(qh_lo, tl.trans(kh_lo), input_precision=PRECISION) * qk_scale
        p = tl.math.exp2(s - lse[:, None])
        p = tl.where(row_ok[:, None] & (cols[None, :] < L), p, 0.0)
        dp = tl.dot(do, tl.trans(vh.to(lo)), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dqh += tl.dot(ds.to(lo), kh_lo, input_precision=PRECISION)

    q = _load_rows(q_base, offs_m, offs_d, sq_l, sq_d, L, D).to(tl.float32)
    dq = _pixel_norm_rows_bwd(q, dqh * sm_scale, rq, nq, rsqrt_d)
    _store_rows(DQ + bh_off * D, dq.to(DQ.dtype.element_ty), offs_m, offs_d, D, L)


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


def _dot_dtype(dtype: torch.dtype):
    # The interpreter (numpy) has no bf16 matmul: it multiplies the raw bits. Upcast there.
    if dtype == torch.bfloat16 and interpreting():
        return tl.float32
    return _TL_DTYPES[dtype]


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs follow torch's TF32 switch, so the kernel agrees with torch matmuls; the
    # setting does not matter for fp16/bf16 operands.
    if dtype == torch.float32 and (interpreting() or not torch.backends.cuda.matmul.allow_tf32):
        return "ieee"
    return "tf32"


def fwd_configs(d: int, dtype: torch.dtype) -> list[dict]:
    """Candidate tiles for the forward, fastest first (``BLOCK_D`` = padded head dim).

    The launcher takes the first that fits the GPU's shared memory and remembers it.
    """
    bd = _block_d(d)
    if interpreting():
        return [dict(BLOCK_M=32, BLOCK_N=16, BLOCK_D=bd)]  # M != N, as on GPUs
    narrow = dtype != torch.float32  # 2-byte tiles: half the shared memory
    cands = []
    if bd <= 64 and narrow:
        cands.append(dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3))
    if bd <= 128 and narrow:
        cands.append(dict(BLOCK_M=128, BLOCK_N=32, num_warps=8, num_stages=2))
    cands.append(dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2))
    cands.append(dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=1))
    return [dict(c, BLOCK_D=bd) for c in cands]


def bwd_configs(d: int, dtype: torch.dtype) -> list[dict]:
    """Candidate tiles for the two backward kernels, fastest first."""
    bd = _block_d(d)
    if interpreting():
        return [dict(BLOCK_M=16, BLOCK_N=32, BLOCK_D=bd)]
    narrow = dtype != torch.float32
    cands = []
    if bd <= 64 and narrow:
        cands.append(dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2))
    if bd <= 128:
        cands.append(dict(BLOCK_M=32, BLOCK_N=64, num_warps=8 if bd > 64 else 4, num_stages=1))
    cands.append(dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1))
    cands.append(dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=1))
    return [dict(c, BLOCK_D=bd) for c in cands]


_CHOSEN: dict[tuple, int] = {}  # (kernel, D, dtype, device) -> index of the config that fits


def _launch(kernel, grid_dim: str, length: int, heads: int, args, consts, configs, key) -> None:
    """Launch ``kernel`` with the first of ``configs`` that the GPU can hold."""
    first = _CHOSEN.get(key, 0) if len(configs) > 1 else 0
    for i in range(first, len(configs)):
        cfg = configs[i]
        grid = (triton.cdiv(length, cfg[grid_dim]), heads)
        try:
            kernel[grid](*args, **consts, **cfg)
        except OutOfResources:
            continue
        _CHOSEN[key] = i
        return
    raise RuntimeError(f"{kernel.fn.__name__}: no tile configuration fits this GPU, key {key}")


def _device_of(x: torch.Tensor):
    """Launch on x's GPU, not the current one."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _scales(d: int) -> tuple[float, float, float]:
    sm_scale = 1.0 / math.sqrt(d)
    return 1.0 / math.sqrt(d), sm_scale * LOG2E, sm_scale


def mp_attention_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-4, config: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward; returns ``(out (N,H,L,D) contiguous, lse fp32 (N,H,L))``."""
    n, h, length, d = q.shape
    out = torch.empty((n, h, length, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((n, h, length), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse.fill_(float("-inf"))
    configs = [config] if config else fwd_configs(d, q.dtype)
    rsqrt_d, qk_scale, _ = _scales(d)
    args = (q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride())
    args += (h, length, d, rsqrt_d, eps, qk_scale)
    consts = dict(PRECISION=_precision(q.dtype), DOT_DTYPE=_dot_dtype(q.dtype))
    key = ("fwd", d, q.dtype, q.device)
    with _device_of(q):
        _launch(_mp_attention_fwd_kernel, "BLOCK_M", length, n * h, args, consts, configs, key)
    return out, lse


def mp_attention_bwd(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dlse: torch.Tensor | None = None,
    eps: float = 1e-4,
    config: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward; returns ``(dq, dk, dv)`` for the raw (un-normalised) inputs.

    ``dlse`` (optional) is the gradient flowing into the logsumexp output: since
    ``∂lse_i/∂s_ij = P_ij`` it enters as ``delta_i = rowsum(dO ∘ O)_i − dlse_i``.
    """
    n, h, length, d = q.shape
    dq = torch.empty((n, h, length, d), dtype=q.dtype, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    if dq.numel() == 0:
        return dq, dk, dv
    delta = (do.float() * out.float()).sum(-1)
    if dlse is not None:
        delta = delta - dlse.float()
    delta = delta.contiguous()
    lse = lse.contiguous()
    configs = [config] if config else bwd_configs(d, q.dtype)
    rsqrt_d, qk_scale, sm_scale = _scales(d)
    inputs = (q, k, v, do, lse, delta)
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride())
    scalars = (h, length, d, rsqrt_d, eps, qk_scale, sm_scale)
    consts = dict(PRECISION=_precision(q.dtype), DOT_DTYPE=_dot_dtype(q.dtype))
    with _device_of(q):
        _launch(
            _mp_attention_bwd_dkdv_kernel, "BLOCK_N", length, n * h,
            (*inputs, dk, dv, *strides, *scalars), consts, configs,
            ("dkdv", d, q.dtype, q.device),
        )  # fmt: skip
        _launch(
            _mp_attention_bwd_dq_kernel, "BLOCK_M", length, n * h,
            (*inputs, dq, *strides, *scalars), consts, configs,
            ("dq", d, q.dtype, q.device),
        )  # fmt: skip
    return dq, dk, dv
