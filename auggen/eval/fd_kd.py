"""Distances between two sets of features: FD (Fréchet) and KD (kernel, as in KID).

FD fits a Gaussian to each set and returns the Fréchet distance between the fits (Heusel et
al. 2017, as FID computes it on Inception features):
    FD = ||μ_x − μ_y||² + Tr(Σ_x + Σ_y − 2 (Σ_x Σ_y)^{1/2}).
KD is the unbiased estimate of the squared MMD (Bińkowski et al. 2018, KID) with the cubic
polynomial kernel k(a, b) = (a·b / d + 1)³; large sets are compared on random subsets and the
estimates averaged, as KID implementations do. Both run in float64.

AugGen evaluates them in M_orig's feature space; the paper reports that neither tracks the
gain in FR accuracy well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

KD_SUBSET_SIZE = 1000  # rows per subset (KID's default)
KD_SUBSETS = 100  # subsets averaged when a set has more rows than that


def _features(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name} must be (N >= 2, D) features, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or Inf")
    return x


def _same_width(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same width, got {x.shape[1]} and {y.shape[1]}")


def gaussian_fit(x) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), unbiased covariance (D, D)) of the rows of ``x``, float64."""
    x = _features(x, "x")
    return x.mean(0), np.cov(x, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(x, y) -> float:
    """FD between Gaussian fits of the rows of ``x`` (N, D) and ``y`` (M, D).

    Tr((Σ_x Σ_y)^{1/2}) = Tr((Σ_x^{1/2} Σ_y Σ_x^{1/2})^{1/2}): the inner matrix is symmetric
    positive semi-definite, so its square root comes from a symmetric eigendecomposition
    (no complex parts to discard, and rank-deficient covariances, N < D, are fine).
    """
    x, y = _features(x, "x"), _features(y, "y")
    _same_width(x, y)
    mu_x, s_x = gaussian_fit(x)
    mu_y, s_y = gaussian_fit(y)
    r = _psd_sqrt(s_x)
    m = r @ s_y @ r
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    fd = ((mu_x - mu_y) ** 2).sum() + np.trace(s_x) + np.trace(s_y) - 2 * tr_sqrt
    return float(max(fd, 0.0))


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic kernel: the means of k over x-x and y-y pairs without the
    diagonal, minus twice the mean over x-y pairs."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


@dataclass(frozen=True)
class KernelDistance:
    value: float  # mean of the MMD² estimates (may be slightly negative: it is unbiased)
    std: float  # their standard deviation over subsets (0 for one exact estimate)
    subsets: int  # 1: every row of both sets in one estimate


def kernel_distance(
    x, y, subset_size: int = KD_SUBSET_SIZE, subsets: int = KD_SUBSETS, seed: int = 0
) -> KernelDistance:
    """KD between the rows of ``x`` and ``y``: one exact estimate when both have at most
    ``subset_size`` rows, else the mean over ``subsets`` random subsets of ``subset_size``
    rows of each (drawn without replacement, seeded)."""
    x, y = _features(x, "x"), _features(y, "y")
    _same_width(x, y)
    if subset_size < 2 or subsets < 1:
        raise ValueError(f"need subset_size >= 2 and subsets >= 1, got {subset_size}, {subsets}")
    if len(x) <= subset_size and len(y) <= subset_size:
        return KernelDistance(mmd2_unbiased(x, y), 0.0, 1)
    rng = np.random.default_rng(seed)
    m, n = min(subset_size, len(x)), min(subset_size, len(y))
    est = [
        mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), n, False)])
        for _ in range(subsets)
    ]
    return KernelDistance(float(np.mean(est)), float(np.std(est)), subsets)
