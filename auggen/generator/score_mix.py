"""Score composition (ScoreMix, arXiv 2506.10226): one trajectory, several class conditions.

Along the reverse ODE the denoiser outputs of k source conditions are combined convexly,
``D_mix(x; sigma) = sum_m w_m D(x; sigma, c_m)`` with ``w_m >= 0`` and ``sum_m w_m = 1``
(k = 2: ``lambda D(x; sigma, c_i) + (1 - lambda) D(x; sigma, c_j)``). The k conditions of
an image share its noise and go through the network as one batch of ``batch x k`` rows, so
a step is one network call on a k-times batch, not k calls.
"""

from __future__ import annotations

import torch

WEIGHT_SUM_TOL = 1e-6  # |sum(w) - 1| allowed (weights written with 6 significant digits)


def check_convex(weights, what: str = "weights") -> torch.Tensor:
    """``weights`` (..., k) as float64, or a ValueError naming the offending value(s)."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.ndim == 0 or w.shape[-1] < 1:
        raise ValueError(f"{what} must have one weight per source, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError(f"{what} contain NaN or Inf")
    bad = w[(w < 0) | (w > 1)]
    if bad.numel():
        raise ValueError(f"{what} must each be in [0, 1] (a convex combination), got {bad[0]:g}")
    sums = w.sum(-1)
    off = (sums - 1).abs() > WEIGHT_SUM_TOL
    if off.any():
        got = float(sums[off].flatten()[0])
        raise ValueError(f"{what} must sum to 1 (a convex combination), got a sum of {got:.6g}")
    return w


def check_score_mix(conditions, weights, label_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditions float32 (M, k, label_dim), weights float64 (M, k)), validated."""
    c = torch.as_tensor(conditions)
    c = c.to(torch.float32) if not c.is_floating_point() else c.float()
    w = check_convex(weights)
    if c.ndim != 3 or c.shape[2] != label_dim:
        raise ValueError(
            f"score-mixed conditions must be (M, k, label_dim={label_dim}), got {tuple(c.shape)}"
        )
    if w.shape != c.shape[:2]:
        raise ValueError(
            f"weights must be (M, k) = {tuple(c.shape[:2])} for these conditions, "
            f"got {tuple(w.shape)}"
        )
    if not torch.isfinite(c).all():
        raise ValueError("conditions contain NaN or Inf")
    return c, w


def score_mixed(denoise):
    """``denoise(x, t, c)`` -> ``mixed(x, t, (c (B, k, L), w (B, k)))``, float64 out.

    Row ``m * B + b`` of the one network batch is image b under condition m: source-major,
    so the first B rows are the batch a one-hot sampler would send for the first sources.
    """

    def mixed(x: torch.Tensor, t, cw) -> torch.Tensor:
        c, w = cw
        b, k = w.shape
        rows = x.repeat(k, *([1] * (x.ndim - 1)))
        d = denoise(rows, t, c.transpose(0, 1).flatten(0, 1)).to(torch.float64)
        d = d.unflatten(0, (k, b))
        return (d * w.T.reshape(k, b, *([1] * (d.ndim - 2)))).sum(0)

    return mixed
