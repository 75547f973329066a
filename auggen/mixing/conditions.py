"""Class-condition vectors for the generator: one-hot, two-class mixes, k-class mixes.

AugGen's new identities come from ``c* = alpha * c_i + beta * c_j`` (arXiv 2503.11544,
Sec. 3), with ``c_i`` the one-hot condition of class ``i``. ``dirichlet_mix`` generalises
this to k source classes with Dirichlet-distributed weights (beyond the paper).
"""

from __future__ import annotations

import math

import numpy as np
import torch

MAX_COEF = 2.0  # the paper's grid is [0.1, 1.1]; beyond 2 the condition leaves anything trained


def _check_coef(name: str, value: float, max_coef: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or value > max_coef:
        raise ValueError(f"{name} must be in [0, {max_coef:g}], got {value:g}")
    return value


def _check_class(name: str, index: torch.Tensor, label_dim: int) -> None:
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= label_dim):
        bad = index[(index < 0) | (index >= label_dim)][0]
        raise IndexError(f"{name} must be a class index in [0, {label_dim}), got {int(bad)}")


def one_hot(classes, label_dim: int) -> torch.Tensor:
    """One-hot float rows (M, label_dim) for integer ``classes`` (M,)."""
    classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    _check_class("class", classes, label_dim)
    return torch.nn.functional.one_hot(classes, label_dim).float()


def mix_conditions(i, j, alpha: float, beta: float, label_dim: int, max_coef: float = MAX_COEF):
    """``alpha * onehot(i) + beta * onehot(j)``.

    ``i`` and ``j`` are ints (returns (label_dim,)) or equal-length integer sequences
    (returns (M, label_dim)). Raises on i == j, indices outside [0, label_dim), and
    coefficients outside [0, max_coef] or both zero (that is the unconditional model).
    """
    if label_dim < 2:
        raise ValueError(f"label_dim must be >= 2 to mix two classes, got {label_dim}")
    alpha = _check_coef("alpha", alpha, max_coef)
    beta = _check_coef("beta", beta, max_coef)
    if alpha == 0.0 and beta == 0.0:
        raise ValueError("alpha and beta are both 0: that is the unconditional model, not a mix")
    scalar = np.ndim(i) == 0 and np.ndim(j) == 0
    ti = torch.as_tensor(i, dtype=torch.long).reshape(-1)
    tj = torch.as_tensor(j, dtype=torch.long).reshape(-1)
    if ti.shape != tj.shape:
        raise ValueError(f"i and j must have the same length, got {len(ti)} and {len(tj)}")
    _check_class("i", ti, label_dim)
    _check_class("j", tj, label_dim)
    same = ti == tj
    if bool(same.any()):
        raise ValueError(f"i and j must be distinct classes, got i == j == {int(ti[same][0])}")
    rows = torch.arange(len(ti))
    c = torch.zeros(len(ti), label_dim)
    c[rows, ti] = alpha
    c[rows, tj] = beta
    return c[0] if scalar else c


def dirichlet_mix(
    classes,
    label_dim: int,
    concentration: float = 1.0,
    scale: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-class mix ``scale * sum_m w_m onehot(classes[m])`` with ``w ~ Dirichlet(concentration)``.

    ``classes`` is (k,) distinct indices or (M, k) rows of them. Returns (conditions
    (M, label_dim), weights (M, k)); with k == 2, ``scale * w`` plays the role of (alpha, beta).
    """
    c = torch.as_tensor(classes, dtype=torch.long)
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2 or c.shape[1] < 2:
        raise ValueError(f"classes must be (k,) or (M, k) with k >= 2, got {tuple(c.shape)}")
    if concentration <= 0:
        raise ValueError(f"concentration must be > 0, got {concentration}")
    _check_coef("scale", scale, MAX_COEF)
    _check_class("classes", c, label_dim)
    if any(len(set(row)) != len(row) for row in c.tolist()):
        raise ValueError("classes in one mix must be distinct")
    rng = np.random.default_rng(seed)
    w = torch.from_numpy(rng.dirichlet([concentration] * c.shape[1], size=len(c))).float()
    cond = torch.zeros(len(c), label_dim)
    cond.scatter_add_(1, c, w * scale)
    return cond, w


def sample_pairs(num_classes: int, num_pairs: int, seed: int = 0) -> torch.Tensor:
    """(num_pairs, 2) int64 random pairs of distinct classes, unordered-unique while possible."""
    if num_classes < 2:
        raise ValueError(f"mixing needs at least two classes, got num_classes={num_classes}")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    rng = np.random.default_rng(seed)
    total = num_classes * (num_classes - 1) // 2
    out: list[tuple[int, int]] = []
    while len(out) < num_pairs:
        # Draw unique unordered pairs; repeat the full set only when more are asked for.
        take = min(total, num_pairs - len(out))
        if total <= 4 * take:
            iu, ju = np.triu_indices(num_classes, k=1)
            pick = rng.permutation(total)[:take]
            batch = list(zip(iu[pick].tolist(), ju[pick].tolist()))
        else:
            seen: set[tuple[int, int]] = set()
            batch = []
            while len(batch) < take:
                a, b = sorted(rng.choice(num_classes, size=2, replace=False).tolist())
                if (a, b) not in seen:
                    seen.add((a, b))
                    batch.append((a, b))
        # Random order inside the pair, so i is not always the smaller index.
        flip = rng.random(len(batch)) < 0.5
        out += [(b, a) if f else (a, b) for (a, b), f in zip(batch, flip)]
    return torch.tensor(out, dtype=torch.long)
