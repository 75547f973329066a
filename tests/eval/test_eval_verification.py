import itertools

import numpy as np
import pytest
import torch

from auggen.eval import avg_h, make_verification_pairs, verification_accuracy
from auggen.eval.verification import best_threshold, kfold_slices


def insightface_calculate_roc(emb1, emb2, issame, nfolds=10):
    """Independent brute force of insightface's calculate_roc accuracy on embeddings."""
    thresholds = np.arange(0, 4, 0.01)
    n = len(issame)
    dist = np.sum((emb1 - emb2) ** 2, 1)
    sizes = [n // nfolds + (1 if f < n % nfolds else 0) for f in range(nfolds)]
    starts = np.cumsum([0] + sizes)
    accs = []
    for f in range(nfolds):
        test = list(range(starts[f], starts[f + 1]))
        train = [i for i in range(n) if i not in test]
        best_acc, best_t = -1.0, None
        for t in thresholds:  # strict '>' keeps the first (smallest) t on ties
            acc = np.mean([(dist[i] < t) == issame[i] for i in train])
            if acc > best_acc:
                best_acc, best_t = acc, t
        accs.append(np.mean([(dist[i] < best_t) == issame[i] for i in test]))
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
def test_matches_insightface_grid(n, seed):
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.5
    e1 = rng.normal(size=(n, 8))
    e2 = np.where(issame[:, None], e1 + rng.normal(scale=0.9, size=(n, 8)), rng.normal(size=(n, 8)))
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    cos = np.sum(e1 * e2, 1)
    grid = 1 - np.arange(0, 4, 0.01) / 2
    got = verification_accuracy(cos, issame, 10, thresholds=grid)
    want = insightface_calculate_roc(e1, e2, issame)
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("n,decimals,nfolds", [(41, 1, 10), (64, 3, 4), (30, 0, 3)])
def test_default_thresholds_match_brute_force_with_ties(n, decimals, nfolds):
    rng = np.random.default_rng(n)
    issame = rng.random(n) < 0.4
    scores = np.round(rng.normal(size=n) + issame * 1.0, decimals)  # many tied scores
    got = verification_accuracy(torch.from_numpy(scores), torch.from_numpy(issame), nfolds)
    assert got == pytest.approx(brute_fold_accuracy(scores, issame, nfolds), abs=1e-12)


def test_hand_made_cases():
    # Perfect separation -> 100 %; the threshold sits halfway between the two groups.
    s = np.array([0.9, 0.1, 0.8, 0.2] * 5)
    same = np.array([True, False] * 10)
    assert verification_accuracy(s, same) == (1.0, 0.0)
    t, acc = best_threshold(s, same)
    assert acc == 1.0 and t == pytest.approx(0.5)
    # All scores equal: "all different" (strictest) wins the tie over "all same".
    t, acc = best_threshold(np.zeros(4), np.array([True, True, False, False]))
    assert acc == 0.5 and t > 0


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
