import numpy as np
import pytest
import torch

from auggen.eval import rank1_identification, tar_at_far, tar_at_far_table
from auggen.eval.identification import nearest_neighbor


def brute_tar(scores, issame, far):
    imp = [s for s, y in zip(scores, issame) if not y]
    gen = [s for s, y in zip(scores, issame) if y]
    # The smallest candidate threshold (impostor scores and -inf) with FAR <= far.
    ok = [t for t in [-np.inf] + imp if sum(s > t for s in imp) / len(imp) <= far]
    t = min(ok)
    return sum(s > t for s in gen) / len(gen)


@pytest.mark.parametrize("decimals", [None, 1])
def test_tar_at_far_vs_brute_force(decimals):
    rng = np.random.default_rng(0)
    issame = rng.random(300) < 0.3
    scores = rng.normal(size=300) + 1.5 * issame
    if decimals is not None:
        scores = np.round(scores, decimals)  # ties among and across genuine/impostor
    fars = [0.0, 1e-6, 1 / 250, 0.01, 0.05, 0.1, 0.333, 1.0]
    got = tar_at_far(scores, issame, fars)
    want = [brute_tar(scores, issame, f) for f in fars]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert tar_at_far(scores, issame, 0.1) == pytest.approx(want[5])


def test_tar_at_far_hand_made():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.75, 0.5, 0.4, 0.3])
    issame = np.array([True, True, True, True, False, False, False, False])
    # far below 1/4: threshold = top impostor 0.75 -> genuine above: 0.9, 0.8.
    assert tar_at_far(scores, issame, 1e-6) == 0.5
    assert tar_at_far(scores, issame, 0.25) == 1.0  # threshold 0.5
    assert tar_at_far_table(scores, issame, fars=(1e-6, 0.25, 1.0)) == {
        "TAR@FAR=0.25": 1.0,
        "TAR@FAR=1e0": 1.0,
    }
    with pytest.raises(ValueError, match="far"):
        tar_at_far(scores, issame, 2.0)


def brute_rank1(probe, plabels, gallery, glabels):
    p = probe / np.linalg.norm(probe, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    hits = 0
    for i in range(len(p)):
        best = max(range(len(g)), key=lambda j: float(p[i] @ g[j]))
        hits += glabels[best] == plabels[i]
    return hits / len(p)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_rank1_vs_brute_force(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(20, 16))
    gallery = centers + 0.3 * rng.normal(size=centers.shape)
    glabels = np.arange(20)
    plabels = rng.integers(0, 20, 60)
    probe = centers[plabels] + 0.9 * rng.normal(size=(60, 16))
    distractors = rng.normal(size=(40, 16)) * 2
    got = rank1_identification(probe, plabels, gallery, glabels, distractors, backend=backend)
    all_g = np.concatenate([gallery, distractors])
    all_l = np.concatenate([glabels, -np.ones(40, int)])
    assert got == pytest.approx(brute_rank1(probe, plabels, all_g, all_l))
    assert 0 < got < 1
    without = rank1_identification(probe, plabels, gallery, glabels, backend=backend)
    assert without == pytest.approx(brute_rank1(probe, plabels, gallery, glabels))


def test_nearest_neighbor_backends_agree_and_errors():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    q, db = torch.randn(33, 8, generator=g), torch.randn(77, 8, generator=g)
    assert torch.equal(nearest_neighbor(q, db, "faiss"), nearest_neighbor(q, db, "torch", chunk=5))
    with pytest.raises(ValueError, match="backend"):
        nearest_neighbor(q, db, "gpu")
    with pytest.raises(ValueError, match="D="):
        nearest_neighbor(q, db[:, :4])
