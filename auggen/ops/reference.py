"""Plain-PyTorch definitions of the fused ops (the ``"reference"`` backend).

Every other backend is tested against these. Equations follow EDM2
(Karras et al., CVPR 2024, `networks_edm2.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MP_SILU_GAIN = 0.596  # ~ sqrt(E[silu(z)^2]) for z ~ N(0, 1)


def pixel_norm_ref(x: torch.Tensor, dim: int = 1, eps: float = 1e-4) -> torch.Tensor:
    """EDM2 ``normalize``: x / (eps + ||x||_2 / sqrt(C)) along ``dim``, norm in fp32 (or fp64)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=acc)
    norm = torch.add(eps, norm, alpha=1.0 / math.sqrt(max(x.shape[dim], 1)))
    return x / norm.to(x.dtype)


def mp_silu_ref(x: torch.Tensor) -> torch.Tensor:
    """EDM2 ``mp_silu``: silu(x) / 0.596."""
    return F.silu(x) / MP_SILU_GAIN


def mp_sum_ref(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """EDM2 ``mp_sum``: lerp(a, b, t) / sqrt((1 - t)^2 + t^2)."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def pixel_norm_silu_ref(
    x: torch.Tensor, dim: int = 1, eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder-block prologue: ``(n, mp_silu(n))`` with ``n = pixel_norm(x)``."""
    n = pixel_norm_ref(x, dim=dim, eps=eps)
    return n, mp_silu_ref(n)


def modulated_mp_silu_ref(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """EDM2 block modulation: ``mp_silu(y * c)`` with ``c`` of shape (N, C) broadcast over space."""
    return mp_silu_ref(y * c.reshape(*c.shape, *([1] * (y.ndim - 2))).to(y.dtype))


def mp_sum_clamp_ref(
    a: torch.Tensor, b: torch.Tensor, t: float = 0.5, clip: float = 256.0
) -> torch.Tensor:
    """EDM2 block epilogue: ``clamp(mp_sum(a, b, t), -clip, clip)``."""
    return mp_sum_ref(a, b, t).clamp(-clip, clip)
