"""Magnitude-preserving layers of the EDM2 UNet (Karras et al., CVPR 2024, Sec. 3 / App. B).

Parameter names and registration order follow NVlabs/edm2 ``networks_edm2.py`` so its
checkpoints load into these modules. Normalisation, activation, modulation and residual sums
go through :mod:`auggen.ops`; every layer takes ``backend`` (None = fastest available) so a
test can run the whole network on the ``"reference"`` backend.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from auggen import ops


def _compiling() -> bool:
    """Inside torch.compile the cache would only add guards and recompiles: skip it."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling and is_compiling())


def normalize_rows(w: torch.Tensor, eps: float = 1e-4, backend: str | None = None):
    """EDM2 ``normalize`` over every dim except 0: each output row gets unit RMS (Eq. 47)."""
    flat = w.reshape(w.shape[0], -1)
    return ops.pixel_norm(flat, dim=1, eps=eps, backend=backend).reshape(w.shape)


def mp_cat(a: torch.Tensor, b: torch.Tensor, dim: int = 1, t: float = 0.5) -> torch.Tensor:
    """Magnitude-preserving concatenation (EDM2 Eq. 103); ``t`` weights ``b``."""
    na, nb = a.shape[dim], b.shape[dim]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    wa = c / math.sqrt(na) * (1 - t)
    wb = c / math.sqrt(nb) * t
    return torch.cat([wa * a, wb * b], dim=dim)


def resample(x: torch.Tensor, mode: str = "keep") -> torch.Tensor:
    """EDM2 resampling with the [1, 1] filter: 2x2 box down / nearest-neighbour up."""
    if mode == "keep":
        return x
    if mode == "down":
        return F.avg_pool2d(x, 2)
    if mode == "up":  # nearest 2x: exact copies, and the layout (channels-last) is kept
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    raise ValueError(f"resample mode must be 'keep', 'down' or 'up', got {mode!r}")


class MPFourier(nn.Module):
    """Magnitude-preserving Fourier features: sqrt(2) cos(2π(f x + φ)), f ~ N(0, bw²)."""

    def __init__(self, num_channels: int, bandwidth: float = 1.0):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(torch.float32).ger(self.freqs.to(torch.float32))
        y = y + self.phases.to(torch.float32)
        return (y.cos() * math.sqrt(2)).to(x.dtype)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a conv/matmul on ``x`` runs in: autocast's when it is on, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class MPConv(nn.Module):
    """Conv / linear with forced weight normalisation (EDM2 Eq. 46-47) and a learned ``gain``.

    In training mode the stored weight is overwritten with its normalised value before use.
    At inference (eval mode, no autograd) the weight the conv uses, ``normalize(w) /
    sqrt(fan_in)`` cast to the compute dtype, is cached per dtype, keyed by the weight's
    version counter, so an in-place change (optimizer step, ``load_state_dict``) invalidates
    it, as does ``train()``; only a non-unit ``gain`` is applied per call. Under torch.compile
    the cache is not consulted (guards, recompiles): ``inference_weights`` bakes the weights
    into the modules before compiling instead.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple | list, backend=None):
        super().__init__()
        self.out_channels = out_channels
        self.backend = backend
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))
        self._cache: dict | None = None  # "key": weight version; (dtype, gain...): weight
        self._baked: torch.Tensor | None = None  # set by inference_weights()

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _normalized_weight(self) -> torch.Tensor:
        w = self.weight
        if self.training:
            with torch.no_grad():
                self.weight.copy_(normalize_rows(w.to(torch.float32), backend=self.backend))
        return normalize_rows(w.to(torch.float32), backend=self.backend)

    def inference_weight(
        self, dtype: torch.dtype, gain: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        """``normalize(w) * (gain / sqrt(fan_in))`` in ``dtype`` (the training formula, bit for
        bit), cached per (dtype, gain) until the weight or a tensor gain changes."""
        w = self.weight
        key = (w._version, w.data_ptr(), w.device)
        if self._cache is None or self._cache.get("key") != key:
            self._cache = {"key": key}
        slot = self._slot(dtype, gain)
        if slot not in self._cache:
            if isinstance(gain, torch.Tensor):  # older values of this gain are stale
                stale = slot[-3:-1]  # ("tensor", data_ptr), also in ("winograd", *slot)
                self._cache = {k: v for k, v in self._cache.items() if k[-3:-1] != stale}
            # normal tensors even inside inference_mode, so a later forward with autograd
            # (a frozen G differentiated in its input) can save them for backward
            with torch.no_grad(), torch.inference_mode(False):
                wn = normalize_rows(w.to(torch.float32), backend=self.backend)
                self._cache[slot] = (wn * (gain / math.sqrt(wn[0].numel()))).to(dtype)
        return self._cache[slot]

    @staticmethod
    def _slot(dtype: torch.dtype, gain) -> tuple:
        if isinstance(gain, torch.Tensor):
            return (dtype, "tensor", gain.data_ptr(), gain._version)
        return (dtype, float(gain))

    def _inference_winograd(self, dtype: torch.dtype, gain) -> torch.Tensor:
        """``winograd_weight`` of ``inference_weight(dtype, gain)``, cached beside it and
        invalidated with it."""
        w = self.inference_weight(dtype, gain)
        slot = ("winograd", *self._slot(dtype, gain))
        if slot not in self._cache:
            with torch.no_grad(), torch.inference_mode(False):
                self._cache[slot] = ops.winograd_weight(w)
        return self._cache[slot]

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        w = self.weight
        if self.training or (torch.is_grad_enabled() and w.requires_grad):
            w = self._normalized_weight()
            w = (w * (gain / math.sqrt(w[0].numel()))).to(x.dtype)
        elif _compiling():
            baked = self._baked
            if baked is not None and baked.dtype == _compute_dtype(x):
                unit = isinstance(gain, (int, float)) and gain == 1
                w = (
                    baked
                    if unit
                    else baked * (gain.to(baked.dtype) if torch.is_tensor(gain) else gain)
                )
            else:
                w = self._normalized_weight()
                w = (w * (gain / math.sqrt(w[0].numel()))).to(x.dtype)
        else:
            w = self.inference_weight(_compute_dtype(x), gain)
            if w.ndim == 4 and w.shape[-1] == 3:  # the cached transform, if Winograd runs
                u = lambda: self._inference_winograd(w.dtype, gain)  # noqa: E731
                return ops.conv3x3(x, w, self.backend, u)
        if w.ndim == 2:
            return x @ w.t()
        if w.shape[-1] == 3:
            return ops.conv3x3(x, w, self.backend)  # Winograd on the CPU backend, else conv2d
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


@contextlib.contextmanager
def inference_weights(module: nn.Module | None, dtype: torch.dtype):
    """Inside: every MPConv below ``module`` holds its inference weight in ``dtype`` as a
    plain tensor attribute, so a compiled forward reads it instead of renormalising all
    weights on every call. The module must stay in eval mode and unchanged meanwhile."""
    convs = [m for m in module.modules() if isinstance(m, MPConv)] if module is not None else []
    try:
        for m in convs:
            m._baked = m.inference_weight(dtype)
        yield module
    finally:
        for m in convs:
            m._baked = None


class Block(nn.Module):
    """EDM2 encoder/decoder block (Fig. 21): resample, residual branch, optional attention."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        flavor: str = "enc",
        resample_mode: str = "keep",
        attention: bool = False,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        res_balance: float = 0.3,
        attn_balance: float = 0.3,
        clip_act: float = 256.0,
        backend: str | None = None,
    ):
        super().__init__()
        if flavor not in ("enc", "dec"):
            raise ValueError(f"flavor must be 'enc' or 'dec', got {flavor!r}")
        self.out_channels = out_channels
        self.flavor = flavor
        self.resample_mode = resample_mode
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout = dropout
        self.res_balance = res_balance
        self.attn_balance = attn_balance
        self.clip_act = clip_act
        self.backend = backend
        conv = dict(backend=backend)
        self.emb_gain = nn.Parameter(torch.zeros([]))
        res0_in = out_channels if flavor == "enc" else in_channels
        self.conv_res0 = MPConv(res0_in, out_channels, [3, 3], **conv)
        self.emb_linear = MPConv(emb_channels, out_channels, [], **conv)
        self.conv_res1 = MPConv(out_channels, out_channels, [3, 3], **conv)
        self.conv_skip = (
            MPConv(in_channels, out_channels, [1, 1], **conv)
            if in_channels != out_channels
            else None
        )
        self.attn_qkv = (
            MPConv(out_channels, out_channels * 3, [1, 1], **conv) if self.num_heads else None
        )
        self.attn_proj = (
            MPConv(out_channels, out_channels, [1, 1], **conv) if self.num_heads else None
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        be = self.backend
        x = resample(x, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x, h = ops.pixel_norm_silu(x, dim=1, backend=be)  # per-pixel norm of the skip path
        else:
            h = ops.mp_silu(x, backend=be)
        y = self.conv_res0(h)
        c = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = ops.modulated_mp_silu(y, c.to(y.dtype), backend=be)
        if self.training and self.dropout:
            y = F.dropout(y, p=self.dropout)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        if not self.num_heads:
            return self._clip_sum(x, y, self.res_balance)
        x = ops.mp_sum(x, y, t=self.res_balance, backend=be)
        n, c_, hh, ww = x.shape
        # qkv channel index is head*3*ch + c*3 + {q,k,v}: q/k/v interleaved innermost
        qkv = self.attn_qkv(x).reshape(n, self.num_heads, -1, 3, hh * ww)
        q, k, v = (t.transpose(2, 3) for t in qkv.unbind(3))  # (N, heads, HW, ch)
        y = ops.mp_attention(q, k, v, backend=be).transpose(2, 3).reshape(n, c_, hh, ww)
        y = self.attn_proj(y)
        return self._clip_sum(x, y, self.attn_balance)

    def _clip_sum(self, x, y, t):
        if self.clip_act:
            return ops.mp_sum_clamp(x, y, t=t, clip=self.clip_act, backend=self.backend)
        return ops.mp_sum(x, y, t=t, backend=self.backend)


def set_backend(module: nn.Module, backend: str | None) -> nn.Module:
    """Switch every layer below ``module`` to ``backend`` (None = fastest available)."""
    for m in module.modules():
        if hasattr(m, "backend"):
            m.backend = backend
    return module
