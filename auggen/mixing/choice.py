"""How each new identity is made: its source classes, their weights, and the mixing mode.

Two modes (``generate.mix``): ``condition`` (AugGen: one condition ``sum_m w_m c_m`` with
the grid's ``alpha*, beta*``) and ``score`` (ScoreMix: the denoiser outputs of the one-hot
``c_m`` mixed convexly, ``auggen.generator.score_mix``). Sources come from
``generate.pairs``: ``random`` (AugGen, ``sample_pairs``), or ``far`` / ``near`` /
``cond-far`` / ``cond-near`` (``auggen.mixing.pairs``).
"""

from __future__ import annotations

import numpy as np
import torch

from auggen.generator.score_mix import check_convex
from auggen.mixing.conditions import sample_pairs
from auggen.mixing.pairs import PAIR_RULES, auto_cap, select_groups

MIX_MODES = ("condition", "score")


def check_generate(g) -> None:
    """The ScoreMix / pair-selection settings of a ``GenerateConfig``, or a ValueError."""
    if g.mix not in MIX_MODES:
        raise ValueError(f"generate.mix must be one of {MIX_MODES}, got {g.mix!r}")
    if g.pairs not in PAIR_RULES:
        raise ValueError(f"generate.pairs must be one of {PAIR_RULES}, got {g.pairs!r}")
    if g.max_uses_per_identity < 0:
        raise ValueError(
            f"generate.max_uses_per_identity must be >= 0 (0: auto), got {g.max_uses_per_identity}"
        )
    if g.weights:
        if g.mix != "score":
            raise ValueError(
                f"generate.weights={list(g.weights)} is for generate.mix=score; condition "
                "mixing takes generate.alpha/beta (or the grid's)"
            )
        if len(g.weights) != g.sources:
            raise ValueError(
                f"generate.weights={list(g.weights)} has {len(g.weights)} values, "
                f"generate.sources={g.sources} needs {g.sources}"
            )
        check_convex(g.weights, f"generate.weights={list(g.weights)}")
    if g.mix == "score" and g.alpha is not None:
        raise ValueError(
            "generate.alpha/beta weight mixed conditions; with generate.mix=score set "
            "generate.weights (convex, default 0.5/0.5)"
        )
    if g.run_grid and g.mix != "score":
        raise ValueError("generate.run_grid is for generate.mix=score (condition mixing needs it)")


def grid_skipped(cfg) -> bool:
    """The grid stage does no search: score mixing needs no (alpha, beta) unless asked."""
    g = cfg.generate
    return g.mix == "score" and not g.run_grid


def cap_of(g, n_orig: int) -> int:
    return g.max_uses_per_identity or auto_cap(n_orig, g.new_identities, g.sources)


def identity_sources(g, n_orig: int, alpha: float, beta: float, feats=None):
    """(sources (N, k) int64, weights (N, k)) of the N new identities.

    ``random``: k = 2 (the paper) a random pair with weights (alpha*, beta*); k >= 3
    (``generate.sources``, beyond the paper) k distinct random classes with Dirichlet
    (``generate.concentration``) weights scaled to alpha* + beta*, so the condition keeps
    the mass of the chosen grid cell. ``far``/``near``/``cond-*``: the groups of
    ``select_groups`` over ``feats`` (unit class vectors). With ``mix=score`` the weights
    are convex: ``generate.weights``, else 0.5/0.5 (k = 2) or the Dirichlet draw (k >= 3).
    """
    k, n_new = g.sources, g.new_identities
    if k > n_orig:
        raise ValueError(f"generate.sources={k} exceeds the {n_orig} original identities")
    rng = np.random.default_rng(g.seed)
    if g.pairs == "random":
        if k == 2:
            src = sample_pairs(n_orig, n_new, seed=g.seed)
        else:
            src = torch.from_numpy(
                np.stack([rng.choice(n_orig, size=k, replace=False) for _ in range(n_new)])
            ).long()
    else:
        if feats is None:
            raise ValueError(f"generate.pairs={g.pairs!r} needs the class vectors (feats)")
        src = select_groups(feats, n_new, k, cap_of(g, n_orig), g.pairs)
    if g.mix == "score":
        if g.weights:
            w = torch.tensor(g.weights, dtype=torch.float64).expand(n_new, k)
        elif k == 2:
            w = torch.full((n_new, 2), 0.5, dtype=torch.float64)
        else:
            w = torch.from_numpy(rng.dirichlet([g.concentration] * k, size=n_new))
            w = w / w.sum(1, keepdim=True)
        return src, w
    if k == 2:
        return src, torch.tensor([[alpha, beta]]).expand(len(src), 2)
    w = rng.dirichlet([g.concentration] * k, size=n_new)
    return src, torch.from_numpy(w).float() * (alpha + beta)


def identity_conditions(sources, weights, label_dim: int) -> torch.Tensor:
    """(N, label_dim) condition vectors: ``sum_m weights[n, m] * onehot(sources[n, m])``."""
    cond = torch.zeros(len(sources), label_dim)
    return cond.scatter_add_(1, sources, weights.float())


def score_conditions(sources, label_dim: int) -> torch.Tensor:
    """(N, k, label_dim): the one-hot condition of each source, for score mixing."""
    return torch.nn.functional.one_hot(sources, label_dim).float()
