import numpy as np
import pytest
import torch

from auggen.mixing import (
    GridConfig,
    best_cell,
    class_centroids,
    dirichlet_mix,
    grid_search,
    mix_conditions,
    mixing_scores,
    plot_heatmaps,
    read_grid_csv,
    sample_pairs,
    search_inner_product,
    write_best,
    write_grid_csv,
)
from auggen.mixing.search import faiss_available


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_scores(new, si, sj):
    """numpy brute force of DESIGN.md's m_s and m_d, in float64."""
    f = _unit(np.asarray(new, np.float64))
    k = len(f)
    m_s = np.mean([f[a] @ f[b] for a in range(k) for b in range(k) if a != b])

    def centroid(x):
        c = _unit(np.asarray(x, np.float64)).mean(0)
        return c / np.linalg.norm(c)

    mu = centroid(new)
    m_d = 1 - max(mu @ centroid(si), mu @ centroid(sj))
    return m_s, m_d


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("k,d", [(2, 3), (5, 17), (9, 64)])
def test_mixing_scores_match_numpy(backend, k, d):
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss not installed")
    g = torch.Generator().manual_seed(k * 100 + d)
    new = torch.randn(k, d, generator=g) * 3
    si = torch.randn(4, d, generator=g) + new.mean(0)
    sj = torch.randn(7, d, generator=g)
    m_s, m_d = mixing_scores(new, si, sj, backend=backend)
    ref_s, ref_d = _brute_scores(new.numpy(), si.numpy(), sj.numpy())
    assert m_s == pytest.approx(ref_s, abs=1e-5)
    assert m_d == pytest.approx(ref_d, abs=1e-5)


def test_mixing_scores_extremes():
    x = torch.randn(1, 8).repeat(4, 1)
    m_s, m_d = mixing_scores(x, x[:1], -x[:1])
    assert m_s == pytest.approx(1.0, abs=1e-6)
    assert m_d == pytest.approx(0.0, abs=1e-6)  # identical to source i: not a new identity
    with pytest.raises(ValueError, match="at least 2 samples"):
        mixing_scores(x[:1], x, x)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_search_matches_brute_force(backend):
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss not installed")
    rng = np.random.default_rng(0)
    q, db = _unit(rng.normal(size=(13, 10))), _unit(rng.normal(size=(50, 10)))
    scores, idx = search_inner_product(q, db, k=3, backend=backend)
    sims = q @ db.T
    ref_idx = np.argsort(-sims, axis=1)[:, :3]
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(sims, ref_idx, 1), atol=1e-5)
    with pytest.raises(ValueError, match="k must be in"):
        search_inner_product(q, db, k=51, backend=backend)


def test_class_centroids():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(20, 6))
    lab = np.arange(20) % 3
    c = class_centroids(torch.tensor(f), torch.tensor(lab)).numpy()
    for k in range(3):
        ref = _unit(f[lab == k]).mean(0)
        np.testing.assert_allclose(c[k], ref / np.linalg.norm(ref), atol=1e-6)


def test_mix_conditions_values_and_batch():
    c = mix_conditions(1, 3, 0.7, 0.4, 5)
    np.testing.assert_allclose(c.numpy(), [0, 0.7, 0, 0.4, 0])
    cb = mix_conditions([0, 2], [1, 0], 0.5, 1.1, 3)
    np.testing.assert_allclose(cb.numpy(), [[0.5, 1.1, 0], [1.1, 0, 0.5]])


@pytest.mark.parametrize(
    "args,err,match",
    [
        ((0, 1, -0.1, 0.5, 4), ValueError, r"alpha must be in \[0, 2\], got -0.1"),
        ((0, 1, 0.5, 3.5, 4), ValueError, r"beta must be in \[0, 2\], got 3.5"),
        ((0, 1, float("nan"), 0.5, 4), ValueError, "alpha must be in"),
        ((2, 2, 0.5, 0.5, 4), ValueError, "distinct classes"),
        ((0, 4, 0.5, 0.5, 4), IndexError, r"j must be a class index in \[0, 4\), got 4"),
        ((-1, 1, 0.5, 0.5, 4), IndexError, "i must be a class index"),
        ((0, 1, 0.0, 0.0, 4), ValueError, "unconditional"),
        ((0, 0, 0.5, 0.5, 1), ValueError, "label_dim must be >= 2"),
    ],
)
def test_mix_conditions_rejects(args, err, match):
    with pytest.raises(err, match=match):
        mix_conditions(*args)


def test_dirichlet_mix():
    cond, w = dirichlet_mix([[0, 2, 5], [1, 3, 4]], 6, concentration=2.0, scale=1.2, seed=3)
    np.testing.assert_allclose(w.sum(1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(cond.sum(1).numpy(), 1.2, atol=1e-5)
    np.testing.assert_allclose(cond[0, [0, 2, 5]].numpy(), 1.2 * w[0].numpy(), atol=1e-6)
    assert cond[0, [1, 3, 4]].abs().sum() == 0
    again, _ = dirichlet_mix([[0, 2, 5], [1, 3, 4]], 6, concentration=2.0, scale=1.2, seed=3)
    assert torch.equal(cond, again)
    with pytest.raises(ValueError, match="distinct"):
        dirichlet_mix([1, 1], 4)
    with pytest.raises(ValueError, match="k >= 2"):
        dirichlet_mix([1], 4)


@pytest.mark.parametrize("n,p", [(2, 1), (3, 3), (5, 10), (40, 25), (3, 7)])
def test_sample_pairs(n, p):
    pairs = sample_pairs(n, p, seed=1)
    assert pairs.shape == (p, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert pairs.min() >= 0 and pairs.max() < n
    unordered = {tuple(sorted(r)) for r in pairs.tolist()}
    assert len(unordered) == min(p, n * (n - 1) // 2)
    assert torch.equal(pairs, sample_pairs(n, p, seed=1))
    with pytest.raises(ValueError, match="at least two classes"):
        sample_pairs(1, 1)


# --- grid search with a fake generator: the "image" is the condition itself --------------


def _fake_sampler(calls):
    def sample_fn(cond, seeds):
        calls.append(len(cond))
        g = torch.Generator().manual_seed(0)
        proj = torch.randn(cond.shape[1], 3 * 4 * 4, generator=g)
        noise = torch.stack(
            [torch.randn(48, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        )
        x = cond @ proj + 0.3 * noise
        return ((x.tanh() + 1) * 127.5).round().to(torch.uint8).view(-1, 3, 4, 4)

    return sample_fn


def _embed(images):
    return images.float().flatten(1) / 255 - 0.5


def _real(num_classes=5):
    sample = _fake_sampler([])
    labels = torch.arange(num_classes).repeat_interleave(3)
    cond = torch.nn.functional.one_hot(labels, num_classes).float()
    return _embed(sample(cond, torch.arange(len(labels)) + 999)), labels


def test_grid_search_scores_and_outputs(tmp_path):
    feats, labels = _real()
    cfg = GridConfig(alphas=(0.2, 0.6, 1.0), betas=(0.3, 1.1), pairs=3, samples_per_cell=4)
    calls = []
    res = grid_search(_fake_sampler(calls), _embed, feats, labels, 5, cfg)
    assert calls == [2 * 3 * 4] * 3  # one batched sampler call per alpha row
    assert len(res.rows) == 6 and res.preview.shape == (3, 2, 3, 4, 4)
    # Recompute one cell by hand.
    row = res.rows[3]  # alpha 0.6, beta 1.1
    assert (row["alpha"], row["beta"]) == (0.6, 1.1)
    ms, md = [], []
    sample = _fake_sampler([])
    for p, (i, j) in enumerate(res.pairs):
        cond = torch.stack([mix_conditions(i, j, 0.6, 1.1, 5)] * 4)
        f = _embed(sample(cond, torch.arange(p * 4, p * 4 + 4)))
        s, d = _brute_scores(f.numpy(), feats[labels == i].numpy(), feats[labels == j].numpy())
        ms.append(s)
        md.append(d)
    assert row["m_s"] == pytest.approx(np.mean(ms), abs=1e-5)
    assert row["m_d"] == pytest.approx(np.mean(md), abs=1e-5)
    assert row["m_total"] == pytest.approx(np.mean(ms) + np.mean(md), abs=1e-5)

    write_grid_csv(tmp_path / "grid.csv", res.rows)
    back = read_grid_csv(tmp_path / "grid.csv")
    assert [r["m_total"] for r in back] == pytest.approx([r["m_total"] for r in res.rows])
    best = write_best(tmp_path / "best.json", res.rows, res.pairs)
    assert best["m_total"] == max(r["m_total"] for r in res.rows) == best_cell(back)["m_total"]
    plot_heatmaps(tmp_path / "heatmap.png", res.rows)
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_grid_search_resumes_after_crash(tmp_path):
    feats, labels = _real()
    cfg = GridConfig(alphas=(0.1, 0.5, 0.9), betas=(0.5, 1.0), pairs=2, samples_per_cell=3)
    full = grid_search(_fake_sampler([]), _embed, feats, labels, 5, cfg)

    def crash(a):
        if a == 1:
            raise RuntimeError("simulated crash")

    state = tmp_path / "grid_rows"
    with pytest.raises(RuntimeError, match="simulated"):
        grid_search(_fake_sampler([]), _embed, feats, labels, 5, cfg, state, after_row=crash)
    calls = []
    resumed = grid_search(_fake_sampler(calls), _embed, feats, labels, 5, cfg, state)
    assert calls == [2 * 2 * 3]  # only the last alpha row was sampled again
    assert resumed.rows == full.rows
    assert torch.equal(resumed.preview, full.preview)


def test_grid_config_validation():
    with pytest.raises(ValueError, match=r"grid.alphas must be in \[0, 2\], got 2.5"):
        GridConfig(alphas=(0.5, 2.5)).validate()
    with pytest.raises(ValueError, match="samples_per_cell must be >= 2"):
        GridConfig(samples_per_cell=1).validate()
    with pytest.raises(ValueError, match="at least two classes"):
        GridConfig().validate(num_classes=1)
