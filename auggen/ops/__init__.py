"""Fused magnitude-preserving ops of EDM2, with selectable backends.

Every op takes ``backend=None`` (fastest available for the tensor's device) or one of
``"reference"`` (plain PyTorch), ``"cpu"`` (C++/OpenMP, ``auggen._C``), ``"triton"`` and
``"cuda"`` (``auggen._C_cuda``); ``backends()`` lists what works here. Non-reference
backends are ``torch.library`` custom ops (namespace ``auggen``) with autograd and fake
implementations, so ``torch.compile(fullgraph=True)`` traces through them. ``conv3x3`` is
``F.conv2d(x, w, padding=1)`` with a Winograd F(4x4, 3x3) path on the CPU backend.
"""

from auggen.ops import _backend, _selftest
from auggen.ops._backend import BACKENDS, backend_choices, backend_line, backend_report, backends
from auggen.ops.attention import mp_attention
from auggen.ops.conv import conv3x3, winograd_applies, winograd_weight
from auggen.ops.elementwise import mp_silu, mp_sum, mp_sum_clamp
from auggen.ops.modulate import modulated_mp_silu
from auggen.ops.pixel_norm import pixel_norm, pixel_norm_silu

_backend.use_selftest(_selftest)

__all__ = [
    "BACKENDS",
    "backends",
    "backend_report",
    "backend_line",
    "backend_choices",
    "pixel_norm",
    "mp_silu",
    "mp_sum",
    "pixel_norm_silu",
    "modulated_mp_silu",
    "mp_sum_clamp",
    "mp_attention",
    "conv3x3",
    "winograd_weight",
    "winograd_applies",
]
