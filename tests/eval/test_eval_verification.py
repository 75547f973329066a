import itertools

import numpy as np
import pytest
import torch

from auggen.eval import avg_h, make_verification_pairs, verification_accuracy, verification_folds
from auggen.eval.verification import best_threshold, kfold_slices


def insightface_roc_on_distances(dist, issame, nfolds=10):
    """Independent brute force of insightface's calculate_roc accuracy, from distances.

    Folds as KFold(shuffle=False) (np.array_split), thresholds np.arange(0, 4, 0.01),
    "same iff dist < t", accuracy (tp + tn) / size, np.argmax over the training accuracies.
    Returns the per-fold test accuracies.
    """
    thresholds = np.arange(0, 4, 0.01)
    idx = np.arange(len(issame))
    accs = []
    for test in np.array_split(idx, nfolds):
        train = np.setdiff1d(idx, test)

        def acc(t, sel):
            pred = np.less(dist[sel], t)
            tp = np.sum(np.logical_and(pred, issame[sel]))
            tn = np.sum(np.logical_and(~pred, ~issame[sel]))
            return (tp + tn) / len(sel)

        best = int(np.argmax([acc(t, train) for t in thresholds]))
        accs.append(acc(thresholds[best], test))
    return accs


def insightface_calculate_roc(emb1, emb2, issame, nfolds=10):
    """The same on embeddings: squared Euclidean distance as insightface computes it."""
    accs = insightface_roc_on_distances(np.sum((emb1 - emb2) ** 2, 1), issame, nfolds)
    return np.mean(accs), np.std(accs)


def brute_fold_accuracy(scores, issame, nfolds):
    """Best split searched over every cut of the train scores, strictest on ties."""
    n = len(scores)
    sizes = [n // nfolds + (1 if f < n % nfolds else 0) for f in range(nfolds)]
    starts = np.cumsum([0] + sizes)
    accs = []
    for f in range(nfolds):
        test = set(range(starts[f], starts[f + 1]))
        train = [i for i in range(n) if i not in test]
        vals = sorted({scores[i] for i in train})
        cands = [vals[0] - 1] + [(a + b) / 2 for a, b in zip(vals, vals[1:])] + [vals[-1] + 1]
        best_acc, best_t = -1.0, None
        for t in cands:  # '>=' keeps the last (largest) threshold on ties
            acc = sum((scores[i] > t) == issame[i] for i in train) / len(train)
            if acc >= best_acc:
                best_acc, best_t = acc, t
        accs.append(sum((scores[i] > best_t) == issame[i] for i in test) / len(test))
    return np.mean(accs), np.std(accs)


def test_kfold_slices_like_sklearn():
    sl = kfold_slices(23, 10)
    assert [s.stop - s.start for s in sl] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert sl[0].start == 0 and sl[-1].stop == 23
    with pytest.raises(ValueError, match="nfolds"):
        kfold_slices(5, 10)


@pytest.mark.parametrize("n,seed", [(57, 0), (120, 1)])
def test_default_matches_insightface_on_embeddings(n, seed):
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.5
    e1 = rng.normal(size=(n, 8))
    e2 = np.where(issame[:, None], e1 + rng.normal(scale=0.9, size=(n, 8)), rng.normal(size=(n, 8)))
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    cos = np.sum(e1 * e2, 1)
    want = insightface_calculate_roc(e1, e2, issame)
    assert verification_accuracy(cos, issame, 10) == pytest.approx(want, abs=1e-12)
    # The old way of asking for the grid, cosine thresholds 1 - t/2, agrees too.
    grid = 1 - np.arange(0, 4, 0.01) / 2
    assert verification_accuracy(cos, issame, 10, grid) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize(
    "n,step,nfolds,seed",
    [(200, 0.005, 10, 0), (157, 0.05, 10, 1), (64, 0.5, 4, 2), (90, 0.0, 10, 3)],
)
def test_default_equals_insightface_exactly_with_ties(n, step, nfolds, seed):
    """Scores on multiples of ``step``: many ties, many distances exactly on grid points."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.5
    cos = np.clip(rng.normal(0.1 + 0.5 * issame, 0.3), -1, 1)
    cos = np.round(cos / step) * step if step else np.full(n, 0.25)
    want = insightface_roc_on_distances(2 - 2 * cos, issame, nfolds)
    got = verification_folds(torch.from_numpy(cos), torch.from_numpy(issame), nfolds)
    assert got["protocol"] == "insightface"
    assert got["accuracies"] == [float(a) for a in want]  # exactly, fold by fold
    assert verification_accuracy(cos, issame, nfolds) == (np.mean(want), np.std(want))
    assert all(1 - d / 2 == t for d, t in zip(got["distance_thresholds"], got["thresholds"]))


def test_grid_and_exact_differ_when_scores_share_a_grid_cell():
    # Genuine cos 0.8010 (dist 0.398), impostor cos 0.8008 (dist 0.3984): a split exists, but
    # no grid point lies between them, so insightface's protocol cannot find it.
    issame = np.array([True, False] * 20)
    cos = np.where(issame, 0.8010, 0.8008)
    want = insightface_roc_on_distances(2 - 2 * cos, issame)
    assert verification_accuracy(cos, issame) == (np.mean(want), np.std(want)) == (0.5, 0.0)
    assert verification_accuracy(cos, issame, thresholds="exact") == (1.0, 0.0)


@pytest.mark.parametrize("n,decimals,nfolds", [(41, 1, 10), (64, 3, 4), (30, 0, 3)])
def test_exact_option_matches_brute_force_with_ties(n, decimals, nfolds):
    rng = np.random.default_rng(n)
    issame = rng.random(n) < 0.4
    scores = np.round(rng.normal(size=n) + issame * 1.0, decimals)  # many tied scores
    want = brute_fold_accuracy(scores, issame, nfolds)
    got = verification_accuracy(torch.from_numpy(scores), torch.from_numpy(issame), nfolds, "exact")
    assert got == pytest.approx(want, abs=1e-12)
    assert verification_folds(scores, issame, nfolds, "exact")["protocol"] == "exact"


def test_hand_made_cases():
    # Perfect separation -> 100 % either way; exact puts the threshold halfway between the
    # groups. The grid needs dist < t: the genuine pairs at cos 0.75 sit at distance 0.5,
    # exactly on a grid point, so the first that separates is 0.51.
    s = np.array([0.75, 0.1, 0.75, 0.2] * 5)
    same = np.array([True, False] * 10)
    assert verification_accuracy(s, same) == (1.0, 0.0)
    assert verification_accuracy(s, same, thresholds="exact") == (1.0, 0.0)
    t, acc = best_threshold(s, same, "exact")
    assert acc == 1.0 and t == pytest.approx(0.475)
    t, acc = best_threshold(s, same)
    assert acc == 1.0 and t == pytest.approx(1 - 0.51 / 2)
    # All scores equal: "all different" (strictest) wins the tie over "all same".
    t, acc = best_threshold(np.zeros(4), np.array([True, True, False, False]), "exact")
    assert acc == 0.5 and t > 0
    t, acc = best_threshold(np.zeros(4), np.array([True, True, False, False]))
    assert acc == 0.5 and t == 1.0  # distance threshold 0: nothing is "same"
    with pytest.raises(ValueError, match="thresholds"):
        verification_accuracy(s, same, thresholds="midpoints")


def test_make_verification_pairs_balanced_distinct_deterministic():
    labels = torch.arange(40).repeat_interleave(5)
    a, b, same = make_verification_pairs(labels, 301, seed=3)
    assert len(a) == 301 and int(same.sum()) == 150
    assert torch.equal(labels[a] == labels[b], same)
    assert bool((a != b).all())
    keys = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}
    assert len(keys) == 301
    a2, b2, s2 = make_verification_pairs(labels, 301, seed=3)
    assert torch.equal(a, a2) and torch.equal(b, b2) and torch.equal(same, s2)
    # Every genuine pair of a tiny set (enumeration path), and a clear error past that.
    a, b, same = make_verification_pairs(torch.tensor([0, 0, 0, 1, 1]), 8, seed=0)
    assert int(same.sum()) == 4
    gen = {(x, y) for x, y, s in zip(a.tolist(), b.tolist(), same.tolist()) if s}
    want = {p for p in itertools.combinations(range(5), 2) if (p[0] < 3) == (p[1] < 3)}
    assert gen == want
    with pytest.raises(ValueError, match="genuine"):
        make_verification_pairs(torch.tensor([0, 0, 0, 1, 1]), 10, seed=0)


def test_avg_h():
    accs = [0.99, 0.9, 0.85, 0.95, 0.93]
    assert avg_h(accs) == pytest.approx(5 / sum(1 / a for a in accs))
    assert avg_h({"lfw": 0.5, "cfp": 0.5}) == pytest.approx(0.5)
    assert avg_h([0.9, 0.0]) == 0.0
    with pytest.raises(ValueError, match="empty"):
        avg_h([])


def test_make_verification_pairs_enumerates_when_most_pairs_are_wanted():
    labels = torch.arange(20).repeat_interleave(5)  # 200 genuine pairs, 150 wanted
    a, b, same = make_verification_pairs(labels, 300, seed=0)
    assert int(same.sum()) == 150 and torch.equal(labels[a] == labels[b], same)
    assert len({(x, y) for x, y in zip(a.tolist(), b.tolist())}) == 300
