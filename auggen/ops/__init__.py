"""Fused magnitude-preserving ops of EDM2, with selectable backends.

Every op takes ``backend=None`` (fastest available for the tensor's device) or one of
``"reference"``, ``"cpu"``, ``"triton"``, ``"cuda"``; ``backends()`` lists what works here.

NOTE (bootstrap): only the reference backend is wired so far; the compiled/Triton
backends are added in auggen/ops/<family>.py by the ops work (issue 2).
"""

from __future__ import annotations

import torch

from auggen.ops import reference as _ref
from auggen.ops._validate import (
    check_dim,
    check_float,
    check_same_shape,
    check_unit_interval,
)

BACKENDS = ("reference", "cpu", "triton", "cuda")


def backends() -> list[str]:
    return ["reference"]


def _resolve(backend: str | None) -> str:
    if backend is None:
        return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend not in backends():
        raise RuntimeError(f"backend {backend!r} is not available here; available: {backends()}")
    return backend


def pixel_norm(x: torch.Tensor, dim: int = 1, eps: float = 1e-4, backend: str | None = None):
    check_float("x", x)
    dim = check_dim("dim", dim, x.ndim)
    _resolve(backend)
    return _ref.pixel_norm_ref(x, dim, eps)


def mp_silu(x: torch.Tensor, backend: str | None = None):
    check_float("x", x)
    _resolve(backend)
    return _ref.mp_silu_ref(x)


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5, backend: str | None = None):
    check_float("a", a)
    check_float("b", b)
    check_same_shape("a", a, "b", b)
    t = check_unit_interval("t", t)
    _resolve(backend)
    return _ref.mp_sum_ref(a, b, t)


def pixel_norm_silu(x: torch.Tensor, dim: int = 1, eps: float = 1e-4, backend: str | None = None):
    check_float("x", x)
    dim = check_dim("dim", dim, x.ndim)
    _resolve(backend)
    return _ref.pixel_norm_silu_ref(x, dim, eps)


def modulated_mp_silu(y: torch.Tensor, c: torch.Tensor, backend: str | None = None):
    check_float("y", y)
    check_float("c", c)
    if y.ndim < 2 or c.shape != y.shape[:2]:
        raise ValueError(f"c must have shape (N, C) = {tuple(y.shape[:2])}, got {tuple(c.shape)}")
    _resolve(backend)
    return _ref.modulated_mp_silu_ref(y, c)


def mp_sum_clamp(a, b, t: float = 0.5, clip: float = 256.0, backend: str | None = None):
    check_float("a", a)
    check_float("b", b)
    check_same_shape("a", a, "b", b)
    t = check_unit_interval("t", t)
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    _resolve(backend)
    return _ref.mp_sum_clamp_ref(a, b, t, clip)


__all__ = [
    "backends",
    "pixel_norm",
    "mp_silu",
    "mp_sum",
    "pixel_norm_silu",
    "modulated_mp_silu",
    "mp_sum_clamp",
]
