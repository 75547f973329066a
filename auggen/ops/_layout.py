"""Memory layouts for the raw-pointer kernels.

Kernels see dense memory. ``dense_like`` makes every input share the layout of the output
``torch.empty_like(first_input)`` (so contiguous and channels-last inputs run without a
copy, strided ones are copied once), and the geometry helpers describe that layout:
reductions as (outer, C, inner), modulation as (N, S1, C, S2).
"""

from __future__ import annotations

import math

import torch

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def dtype_code(x: torch.Tensor) -> int:
    return DTYPE_CODES[x.dtype]


def dense_like(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with exactly the strides of the dense tensor ``like`` (a copy only if needed)."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like).copy_(t)


def memory_order(x: torch.Tensor) -> list[int]:
    """Dims of the dense tensor ``x`` from outermost to innermost in memory."""
    if x.is_contiguous():  # the common layouts first: no sort, no permuted view
        return list(range(x.ndim))
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return [0, 2, 3, 1]
    order = sorted(range(x.ndim), key=lambda d: (-x.stride(d), -x.shape[d]))
    if not x.permute(order).is_contiguous():
        raise ValueError("memory_order needs a dense tensor")
    return order


def reduction_geometry(x: torch.Tensor, dim: int) -> tuple[int, int, int]:
    """(outer, C, inner) such that element (o, c, i) of the reduction over ``dim`` sits at
    (o * C + c) * inner + i in the memory of the dense tensor ``x``."""
    order = [d for d in memory_order(x) if x.shape[d] != 1 or d == dim]
    p = order.index(dim)
    outer = math.prod(x.shape[d] for d in order[:p])
    inner = math.prod(x.shape[d] for d in order[p + 1 :])
    return outer, x.shape[dim], inner


def modulation_geometry(y: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(N, S1, C, S2) with element (n, s1, ch, s2) at ((n * S1 + s1) * C + ch) * S2 + s2 for
    the dense tensor ``y`` of shape (N, C, *spatial), or None if dims 0/1 are interleaved."""
    n, c = y.shape[0], y.shape[1]
    spatial = math.prod(y.shape[2:])
    order = [d for d in memory_order(y) if y.shape[d] != 1 or d in (0, 1)]
    rest = [d for d in order if d not in (0, 1)]
    if order == [0, 1, *rest]:
        return n, 1, c, spatial
    if order == [0, *rest, 1]:
        return n, spatial, c, 1
    return None
