"""3x3 convolution (stride 1, padding 1) with a Winograd F(4x4, 3x3) path for the CPU.

``conv3x3(x, w)`` equals ``F.conv2d(x, w, padding=1)``. On the ``"cpu"`` backend, for fp32
channels-last input outside autocast and torch.compile, it runs Winograd's minimal filtering
(Lavin & Gray 2016): per 4x4 output tile, ``y = A^T [(G g G^T) . (B^T d B)] A``. The input and
output transforms are C++ kernels (``auggen._C.wino_*``, vectorised over channels); the 36
channel products are one batched GEMM (``torch.bmm``, MKL). That is 4x fewer multiplies than a
direct 3x3 convolution. Tiles run in blocks of whole tile rows (``BLOCK_TILES`` at <= 64
channels, proportionally fewer above) so each block's transforms stay in cache, through a
per-thread workspace. fp32 rounding grows to a few 1e-6 of the output's scale (direct conv:
~4e-7); the output never depends on grad mode.

Backward is the adjoint of each step (``wino_output_bwd``, the GEMMs, ``wino_input_bwd``), so
a train step gets dx and dU from the same kernels, and autograd carries dU to w through
``winograd_weight`` (one small GEMM). Below ``MIN_BACKWARD_PIXELS`` oneDNN computes dx and dw
instead. Everything else (other backends, bf16, NCHW input, torch.compile, fewer than
``MIN_CHANNELS`` channels) calls ``F.conv2d``, which on CUDA is cuDNN's choice. (Copying NCHW
input to channels-last and back was measured at 0.8-1.6x oneDNN's NCHW forward and 0.6-1.7x
its forward+backward: no clear gain, so NCHW stays with oneDNN.)
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F

from auggen.ops._backend import compiling, cpu_kernels, resolve

# Output-tile rows and the weight transform's G (F(4x4, 3x3), interpolation points 0, ±1, ±2).
_G = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)
BLOCK_TILES = 256  # tiles per block at <= 64 channels ((36, 256, 64) fp32: 2.4 MB), fewer above
# Where Winograd wins on a 2-core AVX2 EPYC (benchmarks/bench_conv.py): from 32 input and
# output channels. Its backward wins from 16x16 pixels; below, the backward pass is oneDNN's
# (the same gradients up to rounding; the forward, and so the output, does not change).
MIN_CHANNELS = 32
MIN_BACKWARD_PIXELS = 256


@functools.cache
def _gg(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """kron(G, G) (36, 9): row 6 i + m, column 3 j + l holds G[i, j] G[m, l]. Made once per
    (dtype, device), as a normal tensor even inside inference_mode, so a later training
    forward can save it for backward."""
    with torch.inference_mode(False):
        g = torch.tensor(_G, dtype=dtype, device=device)
        return torch.kron(g, g)


def winograd_weight(w: torch.Tensor) -> torch.Tensor:
    """``(K, C, 3, 3)`` weight -> its transform ``U`` (36, C, K), ``U[6 i + j] = (G w G^T)[i, j]``.
    Differentiable, and in ``w``'s dtype either way, so a cached inference transform equals the
    one a training-mode forward computes, bit for bit."""
    if w.ndim != 4 or tuple(w.shape[2:]) != (3, 3):
        raise ValueError(f"winograd_weight needs a (K, C, 3, 3) weight, got {tuple(w.shape)}")
    k, c = w.shape[:2]
    # one small GEMM straight into the (36, C, K) layout (an einsum took 1 ms at 64x64)
    return (_gg(w.dtype, w.device) @ w.permute(2, 3, 1, 0).reshape(9, c * k)).view(36, c, k)


def winograd_applies(x: torch.Tensor, w: torch.Tensor, backend: str | None = None) -> bool:
    """Whether ``conv3x3`` runs Winograd for ``x`` and weight ``w`` on ``backend``."""
    return (
        x.ndim == 4
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and tuple(w.shape[2:]) == (3, 3)
        and min(w.shape[0], w.shape[1]) >= MIN_CHANNELS
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.is_autocast_enabled("cpu")
        and type(x) is torch.Tensor
        and not compiling()
        and resolve(backend, x) == "cpu"
    )


def conv3x3(
    x: torch.Tensor,
    w: torch.Tensor,
    backend: str | None = None,
    u: torch.Tensor | Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``F.conv2d(x, w, padding=1)`` for a (K, C, 3, 3) ``w``; Winograd on the CPU backend (see
    the module doc). ``u`` is ``winograd_weight(w)`` when the caller has it cached, or a
    function returning it (called only when the Winograd path runs)."""
    if w.ndim != 4 or tuple(w.shape[2:]) != (3, 3):
        raise ValueError(f"conv3x3 needs a (K, C, 3, 3) weight, got {tuple(w.shape)}")
    if x.ndim != 4 or x.shape[1] != w.shape[1]:
        raise ValueError(
            f"conv3x3: input {tuple(x.shape)} does not match weight {tuple(w.shape)} "
            f"(expected (N, {w.shape[1]}, H, W))"
        )
    if not winograd_applies(x, w, backend):
        return F.conv2d(x, w, padding=1)
    if callable(u):
        u = u()
    if u is not None and tuple(u.shape) != (36, w.shape[1], w.shape[0]):
        raise ValueError(
            f"conv3x3: u must be winograd_weight(w), shape (36, {w.shape[1]}, {w.shape[0]}); "
            f"got {tuple(u.shape)}"
        )
    if u is None or (torch.is_grad_enabled() and w.requires_grad and not u.requires_grad):
        u = winograd_weight(w)  # (a cached u without a graph would cut w's gradient)
    return _Winograd.apply(x, u, w)


def _blocks(n: int, h: int, w: int, channels: int):
    """Tile ranges [t0, t1) of whole tile rows, about ``BLOCK_TILES * 64 / channels`` tiles
    each, and the most tiles any block holds."""
    th, tw = (h + 3) // 4, (w + 3) // 4
    rows = n * th
    target = max(1, BLOCK_TILES * 64 // max(channels, 64))
    step = max(1, target // tw)
    return [(r * tw, min(rows, r + step) * tw) for r in range(0, rows, step)], step * tw


_WORKSPACE = threading.local()


def _workspace(numel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two fp32 scratch buffers of ``numel`` elements, kept per thread between calls: fresh
    megabyte buffers would be page-faulted in on every call (a third of a 32 px conv). Made
    as normal tensors even inside inference_mode: an inference tensor could not be written
    by a later forward outside it (any module's, since the workspace is per thread)."""
    bufs = getattr(_WORKSPACE, "bufs", None)
    if bufs is None or bufs[0].numel() < numel:
        with torch.inference_mode(False):
            bufs = (torch.empty(numel), torch.empty(numel))
        _WORKSPACE.bufs = bufs
    return bufs


def _each_block(x: torch.Tensor, u: torch.Tensor):
    """Per block of tiles: the trailing kernel arguments (n, h, w, channels, t0, t1) for the
    input side (C) and the output side (K), and the block's transform-domain views
    v (36, tiles, C) and m (36, tiles, K) in the workspace."""
    n, c, h, w = x.shape
    k = u.shape[2]
    blocks, most = _blocks(n, h, w, max(c, k))
    buf_v, buf_m = _workspace(36 * most * max(c, k))
    for t0, t1 in blocks:
        v = buf_v[: 36 * (t1 - t0) * c].view(36, t1 - t0, c)
        m = buf_m[: 36 * (t1 - t0) * k].view(36, t1 - t0, k)
        yield (n, h, w, c, t0, t1), (n, h, w, k, t0, t1), v, m


def _forward(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    lib = cpu_kernels()
    n, _, h, w = x.shape
    y = torch.empty((n, u.shape[2], h, w), memory_format=torch.channels_last)
    for in_args, out_args, v, m in _each_block(x, u):
        lib.wino_input_fwd(x.data_ptr(), v.data_ptr(), *in_args)
        torch.bmm(v, u, out=m)
        lib.wino_output_fwd(m.data_ptr(), y.data_ptr(), *out_args)
    return y


def _backward(gy, x, u, need_dx: bool, need_du: bool):
    lib = cpu_kernels()
    gy = gy.contiguous(memory_format=torch.channels_last)
    dx = torch.zeros_like(x, memory_format=torch.channels_last) if need_dx else None
    du = torch.zeros_like(u) if need_du else None
    ut = u.transpose(1, 2)
    for in_args, out_args, v, dm in _each_block(x, u):
        lib.wino_output_bwd(gy.data_ptr(), dm.data_ptr(), *out_args)
        if need_dx:
            torch.bmm(dm, ut, out=v)
            lib.wino_input_bwd(v.data_ptr(), dx.data_ptr(), *in_args)
        if need_du:
            lib.wino_input_fwd(x.data_ptr(), v.data_ptr(), *in_args)
            du.baddbmm_(v.transpose(1, 2), dm)
    return dx, du


class _Winograd(torch.autograd.Function):
    """y = conv3x3(x, w) through U = winograd_weight(w). Backward: Winograd's adjoints give dx
    and dU (autograd carries dU to w); below MIN_BACKWARD_PIXELS, oneDNN gives dx and dw."""

    @staticmethod
    def forward(ctx, x, u, w):
        ctx.save_for_backward(x, u, w)
        return _forward(x, u)

    @staticmethod
    def backward(ctx, gy):
        x, u, w = ctx.saved_tensors
        need_dx, need_du, need_dw = ctx.needs_input_grad
        if need_dw and x.shape[2] * x.shape[3] < MIN_BACKWARD_PIXELS:
            dx, dw, _ = torch.ops.aten.convolution_backward(
                gy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [need_dx, True, False]
            )
            return dx, None, dw  # u = winograd_weight(w) gets none: w's gradient is whole
        dx, du = _backward(gy, x, u, need_dx, need_du)
        return dx, du, None  # w's gradient arrives through u's graph
