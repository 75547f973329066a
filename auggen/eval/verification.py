"""1:1 verification: the insightface 10-fold LFW protocol, balanced pairs, the AvgH summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

# insightface's calculate_roc: squared Euclidean distance thresholds, "same iff dist < t".
# Published LFW/CFP/AgeDB numbers are measured on this grid, so it is our default.
INSIGHTFACE_DISTANCE_GRID = np.arange(0, 4, 0.01)


def as_numpy(x, dtype=None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def cosine_to_distance(scores) -> np.ndarray:
    """Squared Euclidean distance of L2-normalised embeddings from their cosine: 2 - 2 cos."""
    return 2.0 - 2.0 * as_numpy(scores, np.float64)


def kfold_slices(n: int, nfolds: int) -> list[slice]:
    """Contiguous folds as sklearn KFold(shuffle=False): the first n % nfolds get one extra."""
    if not 2 <= nfolds <= n:
        raise ValueError(f"nfolds must be in [2, {n}] for {n} pairs, got {nfolds}")
    sizes = [n // nfolds + (1 if i < n % nfolds else 0) for i in range(nfolds)]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct scores, plus one below and one above all.

    For the rule "same iff score > t" these realise every distinct split of the scores, each
    halfway between two observed values rather than on one of them.
    """
    u = np.unique(scores)
    if len(u) == 0:
        return np.zeros(1)
    return np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])


def _protocol(thresholds) -> str:
    if thresholds is None or (isinstance(thresholds, str) and thresholds == "insightface"):
        return "insightface"
    if isinstance(thresholds, str):
        if thresholds != "exact":
            raise ValueError(
                f"thresholds must be 'insightface', 'exact' or an array, got {thresholds!r}"
            )
        return "exact"
    return "cosine"


def _best_on_distance_grid(dist: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """insightface's choice on its grid -> (distance threshold, accuracy).

    Counts "dist < t" per class with searchsorted(side="left"); np.argmax keeps the first
    maximum, i.e. the smallest distance threshold, exactly as calculate_roc does.
    """
    grid = INSIGHTFACE_DISTANCE_GRID
    gen, imp = np.sort(dist[issame]), np.sort(dist[~issame])
    gen_ok = np.searchsorted(gen, grid, side="left")
    imp_ok = len(imp) - np.searchsorted(imp, grid, side="left")
    acc = (gen_ok + imp_ok) / len(dist)
    best = int(np.argmax(acc))
    return float(grid[best]), float(acc[best])


def _best_on_cosine(scores: np.ndarray, issame: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Best "score > t" over ascending cosine thresholds ``t``; ties go to the largest t."""
    gen, imp = np.sort(scores[issame]), np.sort(scores[~issame])
    n_gen_above = len(gen) - np.searchsorted(gen, t, side="right")
    n_imp_at_or_below = np.searchsorted(imp, t, side="right")
    acc = (n_gen_above + n_imp_at_or_below) / len(scores)
    # The strictest threshold on ties, the same direction as insightface's grid choice.
    best = len(t) - 1 - int(np.argmax(acc[::-1]))
    return float(t[best]), float(acc[best])


def best_threshold(scores, issame, thresholds="insightface") -> tuple[float, float]:
    """Cosine threshold with the best accuracy of "same iff score > t" -> (threshold, accuracy).

    ``thresholds``: "insightface" (default) searches insightface's squared-distance grid
    ``np.arange(0, 4, 0.01)`` and returns its cosine equivalent 1 - t/2; "exact" searches
    every distinct split of the scores (``candidate_thresholds``); an array is taken as
    cosine thresholds. Ties always go to the strictest rule (smallest distance = largest
    cosine), as insightface's np.argmax over its ascending distance grid does.
    """
    scores, issame = as_numpy(scores, np.float64), as_numpy(issame, bool)
    protocol = _protocol(thresholds)
    if protocol == "insightface":
        t, acc = _best_on_distance_grid(cosine_to_distance(scores), issame)
        return 1.0 - t / 2.0, acc
    if protocol == "exact":
        return _best_on_cosine(scores, issame, candidate_thresholds(scores))
    return _best_on_cosine(scores, issame, np.sort(as_numpy(thresholds, np.float64)))


def verification_folds(scores, issame, nfolds: int = 10, thresholds="insightface") -> dict:
    """Per-fold results of the 10-fold protocol: {"accuracies", "thresholds", "protocol"}.

    ``scores`` are cosine similarities of L2-normalised embeddings. For each contiguous fold
    (KFold without shuffling) the threshold is chosen on the other folds and applied to this
    one. The default, "insightface", is insightface's ``calculate_roc``: on the squared
    distance 2 - 2 cos, thresholds ``np.arange(0, 4, 0.01)``, "same iff dist < t", the
    first best threshold. Its folds also carry "distance_thresholds"; "thresholds" are
    always the cosine equivalents (rule "score > t"). See ``best_threshold`` for the other
    choices ("exact", or an array of cosine thresholds).
    """
    scores, issame = as_numpy(scores, np.float64), as_numpy(issame, bool)
    if scores.ndim != 1 or scores.shape != issame.shape:
        raise ValueError(
            f"scores and issame must be (N,) of equal length, got {scores.shape} {issame.shape}"
        )
    protocol = _protocol(thresholds)
    dist = cosine_to_distance(scores)
    accs, chosen, chosen_dist = [], [], []
    for fold in kfold_slices(len(scores), nfolds):
        train = np.ones(len(scores), bool)
        train[fold] = False
        if protocol == "insightface":
            # Applied on the distance itself, not on 1 - t/2, so that scores sitting on a
            # grid point fall on the same side as in insightface.
            t, _ = _best_on_distance_grid(dist[train], issame[train])
            same = dist[fold] < t
            chosen_dist.append(t)
            t = 1.0 - t / 2.0
        else:
            t, _ = best_threshold(scores[train], issame[train], thresholds)
            same = scores[fold] > t
        accs.append(float(np.mean(same == issame[fold])))
        chosen.append(t)
    out = {"accuracies": accs, "thresholds": chosen, "protocol": protocol}
    if protocol == "insightface":
        out["distance_thresholds"] = chosen_dist
    return out


def verification_accuracy(scores, issame, nfolds: int = 10, thresholds="insightface"):
    """Mean and std (ddof=0) over folds of the 10-fold verification accuracy.

    ``scores`` are cosine similarities (higher = more likely the same identity). By default
    the threshold grid is insightface's, so the numbers compare with the literature;
    ``thresholds="exact"`` searches every split instead (never worse on the training folds,
    not what published tables use). See ``verification_folds``.
    """
    accs = verification_folds(scores, issame, nfolds, thresholds)["accuracies"]
    return float(np.mean(accs)), float(np.std(accs))


def pair_scores(feats: torch.Tensor, idx_a, idx_b) -> torch.Tensor:
    """Cosine similarity of rows idx_a and idx_b of L2-normalised features."""
    idx_a, idx_b = torch.as_tensor(idx_a), torch.as_tensor(idx_b)
    return (feats[idx_a] * feats[idx_b]).sum(1)


def make_verification_pairs(labels, num_pairs: int, seed: int = 0):
    """Balanced random pairs from a label vector -> (idx_a, idx_b, issame) as torch tensors.

    ``num_pairs // 2`` genuine pairs (same label) and the rest impostor pairs, all distinct
    unordered pairs of distinct images, shuffled together so every contiguous fold of the
    10-fold protocol mixes both kinds. Deterministic for a given ``seed``.
    """
    labels = as_numpy(labels, np.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be (N,), got shape {labels.shape}")
    if num_pairs < 2:
        raise ValueError(f"num_pairs must be >= 2, got {num_pairs}")
    rng = np.random.default_rng(seed)
    n_gen = num_pairs // 2
    n_imp = num_pairs - n_gen
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    pairs_per_class = counts * (counts - 1) // 2
    total_gen = int(pairs_per_class.sum())
    total_imp = len(labels) * (len(labels) - 1) // 2 - total_gen
    if n_gen > total_gen:
        raise ValueError(
            f"num_pairs={num_pairs} needs {n_gen} genuine pairs, labels allow {total_gen}"
        )
    if n_imp > total_imp:
        raise ValueError(
            f"num_pairs={num_pairs} needs {n_imp} impostor pairs, labels allow {total_imp}"
        )

    def draw(n, total, propose):
        # Sample distinct unordered pairs; enumerate when most of them are wanted.
        seen: set[tuple[int, int]] = set()
        if n > total // 2:
            everything = propose(None)
            pick = rng.choice(len(everything), n, replace=False)
            return [everything[k] for k in pick]
        out = []
        while len(out) < n:
            a, b = propose(rng)
            key = (min(a, b), max(a, b))
            if a != b and key not in seen:
                seen.add(key)
                out.append(key)
        return out

    class_p = pairs_per_class / max(total_gen, 1)

    def genuine(r):
        if r is None:
            return [
                (int(m[i]), int(m[j]))
                for m in members
                for i in range(len(m))
                for j in range(i + 1, len(m))
            ]
        m = members[r.choice(len(members), p=class_p)]
        i, j = r.choice(len(m), 2, replace=False)
        return int(m[i]), int(m[j])

    def impostor(r):
        if r is None:
            a, b = np.triu_indices(len(labels), 1)
            keep = labels[a] != labels[b]
            return list(zip(a[keep].tolist(), b[keep].tolist()))
        while True:
            a, b = r.integers(len(labels), size=2)
            if labels[a] != labels[b]:
                return int(a), int(b)

    pairs = draw(n_gen, total_gen, genuine) + draw(n_imp, total_imp, impostor)
    same = np.array([True] * n_gen + [False] * n_imp)
    order = rng.permutation(num_pairs)
    ab = np.array(pairs, dtype=np.int64)[order]
    return (
        torch.from_numpy(ab[:, 0].copy()),
        torch.from_numpy(ab[:, 1].copy()),
        torch.from_numpy(same[order]),
    )


def avg_h(accuracies: Sequence[float] | Mapping[str, float]) -> float:
    """Harmonic mean of verification accuracies (AvgH over LFW, CFP-FP, CPLFW, AgeDB, CALFW)."""
    values = list(accuracies.values()) if isinstance(accuracies, Mapping) else list(accuracies)
    if not values:
        raise ValueError("accuracies is empty")
    a = np.asarray(values, dtype=np.float64)
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError(f"accuracies must be finite and >= 0, got {values}")
    if np.any(a == 0):
        return 0.0
    return float(len(a) / np.sum(1.0 / a))
