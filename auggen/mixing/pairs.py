"""Which classes to mix: random pairs (AugGen), or the most distant / closest ones (ScoreMix).

ScoreMix (arXiv 2506.10226) found pairs far apart in the recogniser's embedding space gave
more than pairs chosen by proximity, and distances between the generator's class conditions
were largely uncorrelated with embedding distances. Here a class is a unit vector (M_orig's
class centroid, or G's learned label embedding) and the distance of two classes is
``1 - cos``.

``select_groups`` is a greedy search over unordered pairs in one total order (distance, then
the smaller class index, then the larger): take the next pair unless it was taken or one of
its classes is used ``cap`` times already. The order is never materialised as an N x N
matrix: each block of ``BLOCK`` rows keeps the ``T`` best partners of each class, the greedy
runs over those candidates, and a check proves the result equals the greedy over all pairs
(every row whose candidates ran out before the last accepted pair was full by then); if it
does not, ``T`` doubles. Under torchrun row block ``b`` goes to rank ``b mod K`` and the
candidates are all-gathered, so the selection is the same for any K. k >= 3 classes per
group: each selected pair grows by the class farthest from (closest to) all its members.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from auggen.infra import runtime
from auggen.mixing.search import l2_normalize

PAIR_RULES = ("random", "far", "near", "cond-far", "cond-near")
BLOCK = 1024  # rows of the distance matrix held at once (BLOCK x N float64)
SPEARMAN_MAX_PAIRS = 200_000  # above this many class pairs the correlation uses a sample


def auto_cap(n_classes: int, n_groups: int, k: int) -> int:
    """Default ``max_uses_per_identity``: twice the mean use of a class, at least 1."""
    return max(1, math.ceil(2 * k * n_groups / n_classes))


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - a_i . b_j`` in float64 for unit rows."""
    return 1.0 - a.double() @ b.double().T


def _row_candidates(feats: torch.Tensor, rows: range, t: int, far: bool):
    """For each class in ``rows``: its ``t`` best partners in the pair order, as
    (a, b, key, last_key_of_row, row_complete)."""
    n = len(feats)
    d = cosine_distance(feats[rows.start : rows.stop], feats)  # (B, N)
    key = -d if far else d
    a = torch.arange(rows.start, rows.stop)
    key[torch.arange(len(a)), a] = math.inf  # never pair a class with itself
    # Stable sort: ties keep ascending partner order, which is the (min, max) tie order.
    order = torch.sort(key, dim=1, stable=True).indices[:, : min(t, n - 1)]
    keys = key.gather(1, order)
    return a, order, keys


def candidate_pairs(feats: torch.Tensor, t: int, far: bool, block: int = BLOCK):
    """(pairs (P, 2) int64 min/max, keys (P,) float64, row_last (N,) float64) over all rows,
    each rank computing its blocks; the pairs are unique and sorted in the pair order."""
    rt = runtime.current()
    n = len(feats)
    blocks = [range(lo, min(lo + block, n)) for lo in range(0, n, block)]
    parts, lasts = [], []
    for blk in runtime.my_items(blocks, rt):
        a, order, keys = _row_candidates(feats, blk, t, far)
        lo = torch.minimum(a[:, None].expand_as(order), order)
        hi = torch.maximum(a[:, None].expand_as(order), order)
        parts.append(torch.stack([lo.flatten().double(), hi.flatten().double(), keys.flatten()], 1))
        lasts.append(torch.stack([a.double(), lo[:, -1].double(), hi[:, -1].double()], 1))
    rows = torch.cat(parts) if parts else torch.empty(0, 3, dtype=torch.float64)
    last = torch.cat(lasts) if lasts else torch.empty(0, 3, dtype=torch.float64)
    if rt.enabled:
        rows = runtime.gather_rows(rows, "pair candidates of every rank's row blocks", rt)
        last = runtime.gather_rows(last, "last candidate of every row", rt)
    pairs, keys = rows[:, :2].long(), rows[:, 2]
    # Unique (min, max) pairs in the total order (key, min, max).
    idx = np.lexsort((pairs[:, 1].numpy(), pairs[:, 0].numpy(), keys.numpy()))
    pairs, keys = pairs[idx], keys[idx]
    keep = torch.ones(len(pairs), dtype=torch.bool)
    keep[1:] = (pairs[1:] != pairs[:-1]).any(1)
    pairs, keys = pairs[keep], keys[keep]
    # Where each row's last candidate sits in that order.
    ids = (pairs[:, 0] * n + pairs[:, 1]).numpy()
    by_id = np.argsort(ids)
    want = (last[:, 1].long() * n + last[:, 2].long()).numpy()
    row_last = np.empty(n, dtype=np.int64)
    row_last[last[:, 0].long().numpy()] = by_id[np.searchsorted(ids[by_id], want)]
    return pairs, keys, row_last


def _greedy(pairs: torch.Tensor, n_pairs: int, cap: int, n: int):
    """Accepted indices into ``pairs`` and, per class, the index at which it became full."""
    uses = np.zeros(n, dtype=np.int64)
    full_at = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    taken = []
    for p, (a, b) in enumerate(pairs.tolist()):
        if uses[a] < cap and uses[b] < cap:
            taken.append(p)
            for c in (a, b):
                uses[c] += 1
                if uses[c] == cap:
                    full_at[c] = p
            if len(taken) == n_pairs:
                break
    return taken, full_at


def select_pairs(feats, n_pairs: int, cap: int, far: bool, block: int = BLOCK) -> torch.Tensor:
    """(n_pairs, 2) int64: the greedy far/near pairs under the usage cap (see module doc)."""
    feats = l2_normalize(feats)
    n = len(feats)
    if n < 2:
        raise ValueError(f"pair selection needs at least two classes, got {n}")
    if cap < 1 or cap * n < 2 * n_pairs:
        raise ValueError(
            f"generate.max_uses_per_identity={cap} allows at most {cap * n // 2} pairs of "
            f"{n} classes, {n_pairs} asked"
        )
    if n_pairs > n * (n - 1) // 2:
        raise ValueError(f"{n_pairs} distinct pairs asked, {n} classes have {n * (n - 1) // 2}")
    t = min(n - 1, max(8, 2 * cap))
    while True:
        pairs, _, row_last = candidate_pairs(feats, t, far, block)
        taken, full_at = _greedy(pairs, n_pairs, cap, n)
        if t >= n - 1:
            break
        # Exact when every row whose t-th candidate comes before the last accepted pair was
        # full by then: none of the pairs it lacks could have been accepted.
        if len(taken) == n_pairs and ((row_last >= taken[-1]) | (full_at <= row_last)).all():
            break
        t = min(n - 1, 2 * t)
    if len(taken) < n_pairs:
        raise ValueError(f"only {len(taken)} pairs satisfy the usage cap {cap}, {n_pairs} asked")
    return pairs[taken]


def grow_groups(feats, pairs: torch.Tensor, k: int, cap: int, far: bool) -> torch.Tensor:
    """(G, k): each pair plus k - 2 classes, each the farthest from (closest to) the
    group's members by its nearest (farthest) member, under the same usage cap; no two
    groups hold the same classes."""
    feats = l2_normalize(feats)
    n = len(feats)
    uses = torch.bincount(pairs.flatten(), minlength=n)
    groups, seen = [], set()
    for pair in pairs.tolist():
        members = list(pair)
        for step in range(k - 2):
            d = cosine_distance(feats[members], feats)  # (m, N)
            score = d.min(0).values if far else -d.max(0).values
            score[members] = -math.inf
            score[uses >= cap] = -math.inf
            order = torch.sort(-score, stable=True).indices  # best first, ties by index
            last = step == k - 3
            pick = next(
                (
                    int(c)
                    for c in order
                    if torch.isfinite(score[c])
                    and not (last and frozenset([*members, int(c)]) in seen)
                ),
                None,
            )
            if pick is None:
                raise ValueError(f"usage cap {cap} leaves no class to grow group {members}")
            members.append(pick)
            uses[pick] += 1
        seen.add(frozenset(members))
        groups.append(members)
    return torch.tensor(groups, dtype=torch.long)


def select_groups(
    feats, n_groups: int, k: int, cap: int, rule: str, block: int = BLOCK
) -> torch.Tensor:
    """(n_groups, k) source classes for ``rule`` in far | near (| cond-far | cond-near: the
    caller passes the condition embeddings as ``feats``)."""
    if rule not in PAIR_RULES or rule == "random":
        raise ValueError(f"select_groups: rule must be one of {PAIR_RULES[1:]}, got {rule!r}")
    far = rule.endswith("far")
    pairs = select_pairs(feats, n_groups, cap, far, block)
    if k > 2:
        if cap * len(feats) < k * n_groups:
            raise ValueError(
                f"generate.max_uses_per_identity={cap} allows {cap * len(feats)} uses of "
                f"{len(feats)} classes, {n_groups} groups of {k} need {k * n_groups}"
            )
        return grow_groups(feats, pairs, k, cap, far)
    return pairs


def group_distance(feats, groups: torch.Tensor) -> torch.Tensor:
    """(G,) mean pairwise cosine distance inside each group of unit ``feats`` rows."""
    f = l2_normalize(feats).double()[groups]  # (G, k, D)
    d = 1.0 - f @ f.transpose(1, 2)
    k = groups.shape[1]
    return (d.sum((1, 2)) - d.diagonal(dim1=1, dim2=2).sum(1)) / (k * (k - 1))


def class_pairs(n: int, max_pairs: int = SPEARMAN_MAX_PAIRS, seed: int = 0):
    """(i, j) int64 tensors: every pair i < j of n classes, or ``max_pairs`` random pairs of
    distinct classes when there are more (never the whole list in memory)."""
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=max_pairs)
        j = (i + rng.integers(1, n, size=max_pairs)) % n  # j != i
    return torch.from_numpy(i).long(), torch.from_numpy(j).long()


def pair_distances(feats, i, j, chunk: int = 8192) -> torch.Tensor:
    """``1 - cos(feats[i], feats[j])`` (float64) for index arrays i, j, a chunk at a time."""
    f = l2_normalize(feats).double()
    i, j = torch.as_tensor(i), torch.as_tensor(j)
    parts = [
        1.0 - (f[i[lo : lo + chunk]] * f[j[lo : lo + chunk]]).sum(1)
        for lo in range(0, len(i), chunk)
    ]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's rho needs."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def spearman(x, y) -> float:
    """Spearman's rank correlation of two equal-length 1-D arrays."""
    rx, ry = _ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def distance_correlation(emb, cond, max_pairs: int = SPEARMAN_MAX_PAIRS, seed: int = 0) -> dict:
    """Spearman rho between condition-space and embedding-space distances over all class
    pairs, or over ``max_pairs`` random distinct pairs above that size."""
    n = len(emb)
    total = n * (n - 1) // 2
    i, j = class_pairs(n, max_pairs, seed)
    de, dc = pair_distances(emb, i, j), pair_distances(cond, i, j)
    return {
        "spearman_rho": spearman(dc.numpy(), de.numpy()),
        "pairs": len(i),
        "all_pairs": total,
        "sampled": total > max_pairs,
    }
