"""Nearest-neighbour search at scale (exact / IVF) and the streaming leakage audit."""

import csv
import json

import numpy as np
import pytest
import torch

import auggen.mixing.nn_index as nn_index
from auggen.analysis.leakage import leakage_audit
from auggen.data.source import ImageSource
from auggen.data.types import LabeledImages
from auggen.mixing.nn_index import MIN_IVF_BASE, NearestIndex, nearest

pytest.importorskip("faiss")


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n_base, n_query, dim=64, centres=1000, noise=0.5, seed=0):
    """Identities as cluster centres; queries sit between two identities (generated faces)."""
    rng = np.random.default_rng(seed)
    c = _unit(rng.standard_normal((centres, dim)))
    base = _unit(
        c[rng.integers(0, centres, n_base)]
        + rng.standard_normal((n_base, dim)) * noise / np.sqrt(dim)
    )
    pair = rng.integers(0, centres, (n_query, 2))
    mid = _unit(c[pair[:, 0]] + c[pair[:, 1]])
    query = _unit(mid + rng.standard_normal((n_query, dim)) * noise / np.sqrt(dim))
    return base, query


def _brute(query, base, k):
    s = query.astype(np.float64) @ base.astype(np.float64).T
    idx = np.argsort(-s, axis=1)[:, :k]
    return np.take_along_axis(s, idx, 1), idx


def test_exact_path_equals_brute_force():
    base, query = _clustered(3000, 200)
    scores, idx, info = nearest(query, base, k=3)
    assert info["kind"] == "exact" and info["recall_at_1_sample"] == 1.0
    ref_s, ref_i = _brute(query, base, 3)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    assert (idx == ref_i).mean() > 0.999  # only float ties may swap
    assert idx.dtype == np.int64 and scores.dtype == np.float32


def test_ivf_recall_on_clustered_data():
    base, query = _clustered(20000, 2000)
    scores, idx, info = nearest(query, base, k=1, exact_limit=0, sample=500)
    assert info["kind"] == "ivf" and info["sample"] == 500
    # The calibrated nprobe scans a small share of the base and keeps recall@1 >= 0.95.
    assert info["nprobe"] <= info["nlist"] * nn_index.MAX_PROBE_FRACTION
    assert info["recall_at_1_sample"] >= 0.95
    ref_s, _ = _brute(query, base, 1)
    recall = np.mean(scores[:, 0] >= ref_s[:, 0] - 1e-5)
    assert recall >= 0.95
    # What IVF returns is a real neighbour with its true score, never better than exact.
    np.testing.assert_allclose(scores[:, 0], np.sum(query * base[idx[:, 0]], 1), atol=1e-5)
    assert np.all(scores[:, 0] <= ref_s[:, 0] + 1e-5)


def test_threshold_switches_exact_and_ivf():
    base, query = _clustered(MIN_IVF_BASE + 1000, 300)
    pairs = len(base) * len(query)
    assert NearestIndex(base, len(query), exact_limit=pairs).kind == "exact"
    # (any recall will do here: the fall-back to exact search is tested below)
    above = NearestIndex(
        base, len(query), exact_limit=pairs - 1, calibration=query, target_recall=0.0
    )
    assert above.kind == "ivf" and above.info["kind"] == "ivf" and above.info["nprobe"] == 1
    scores, idx = above.search(query, 2)
    assert scores.shape == idx.shape == (len(query), 2) and (idx >= 0).all()
    # A base too small for an IVF is searched exactly whatever the limit.
    assert NearestIndex(base[: MIN_IVF_BASE - 1], len(query), exact_limit=0).kind == "exact"


def test_unreachable_recall_falls_back_to_exact():
    base, query = _clustered(5000, 300)
    scores, idx, info = nearest(query, base, k=1, exact_limit=0, target_recall=1.01)
    assert info["kind"] == "exact" and info["recall_at_1_sample"] == 1.0
    assert info["sample"] == 300 and "nprobe" not in info
    tried = info["ivf_tried"]
    assert tried["nprobe"] == tried["nlist"] // 16 and 0 <= tried["recall_at_1"] <= 1
    np.testing.assert_allclose(scores, _brute(query, base, 1)[0], atol=1e-5)


def test_torch_fallback_without_faiss(monkeypatch):
    monkeypatch.setattr(nn_index, "load_faiss", lambda: None)
    base, query = _clustered(MIN_IVF_BASE + 500, 100)
    scores, idx, info = nearest(query, base, k=2, exact_limit=0, gpu=False)
    assert info["kind"] == "exact" and info["backend"] == "torch-cpu"
    ref_s, ref_i = _brute(query, base, 2)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    assert (idx == ref_i).mean() > 0.99


# --- the audit: images carry an id in two pixels, "embedding" looks the id up -------------

N_REAL, N_AUG, N_HELD = 3000, 400, 150
FEATS = np.concatenate(_clustered(N_REAL, N_AUG + N_HELD, dim=32, centres=60, seed=1))


def _images(ids):
    x = torch.zeros(len(ids), 3, 4, 4, dtype=torch.uint8)
    ids = torch.as_tensor(ids)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = ids // 256, ids % 256
    x[:, 1:] = 7
    return x


def _embed(images):
    ids = images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()
    return torch.from_numpy(FEATS[ids.numpy()])


class _IdSource(ImageSource):
    """Decodes nothing: image i is drawn from its id on demand, like a file source would."""

    def __init__(self, ids, labels, names):
        self.ids, self.labels, self.names = list(ids), torch.as_tensor(labels), names
        self.num_classes, self.size = int(self.labels.max()) + 1, 4

    def read_one(self, i):
        return _images([self.ids[i]])[0]

    def name(self, i):
        return self.names[i]


def _data():
    real_labels = torch.arange(N_REAL) % 300
    real_names = [f"real/{i:05d}.png" for i in range(N_REAL)]
    aug_ids = list(range(N_REAL, N_REAL + N_AUG))
    aug_labels = torch.arange(N_AUG) // 4 + 300
    held = _images(range(N_REAL + N_AUG, N_REAL + N_AUG + N_HELD))
    manifest = [
        {
            "file": f"images/{i:05d}.png",
            "label": int(lab),
            "source_i": i % 300,
            "source_j": (i * 7) % 300,
        }
        for i, lab in enumerate(aug_labels)
    ]
    mem = (
        LabeledImages(_images(aug_ids), aug_labels, [], 400),
        LabeledImages(_images(range(N_REAL)), real_labels, real_names, 300),
        held,
    )
    src = (
        _IdSource(aug_ids, aug_labels, [str(i) for i in range(N_AUG)]),
        _IdSource(range(N_REAL), real_labels, real_names),
        _IdSource(range(N_REAL + N_AUG, N_REAL + N_AUG + N_HELD), torch.zeros(N_HELD), []),
    )
    return manifest, mem, src


def _outputs(out_dir):
    with open(out_dir / "leakage.csv") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out_dir / "leakage.json").read_text())


def test_audit_on_sources_equals_in_memory(tmp_path):
    manifest, (aug, real, held), (aug_s, real_s, held_s) = _data()
    a, b = tmp_path / "mem", tmp_path / "src"
    a.mkdir(), b.mkdir()
    leakage_audit(_embed, aug, manifest, real, a, 0.9, held)
    summary = leakage_audit(_embed, aug_s, manifest, real_s, b, 0.9, held_s, batch_size=37)
    assert _outputs(a) == _outputs(b)
    rows, js = _outputs(a)
    assert (a / "leakage.png").exists()
    assert js["search"]["kind"] == "exact" and summary["generated"]["count"] == N_AUG
    # The numbers are the brute-force nearest real image of each generated one.
    ref_s, ref_i = _brute(FEATS[N_REAL : N_REAL + N_AUG], FEATS[:N_REAL], 1)
    np.testing.assert_allclose([float(r["cos"]) for r in rows], ref_s[:, 0], atol=2e-6)
    assert [r["nearest_real"] for r in rows] == [real.names[i] for i in ref_i[:, 0]]
    assert js["real_heldout_reference"]["count"] == N_HELD


def test_audit_reuses_the_real_embeddings_it_is_given(tmp_path):
    """``real_feats`` (what generate's class vectors already computed) gives the same files
    as embedding ``real`` again; a table of the wrong length is refused."""
    manifest, (aug, real, held), _ = _data()
    a, b = tmp_path / "embedded", tmp_path / "given"
    a.mkdir(), b.mkdir()
    leakage_audit(_embed, aug, manifest, real, a, 0.9, held)
    calls = []

    def counting(images):
        calls.append(len(images))
        return _embed(images)

    given = torch.as_tensor(_embed(real.images))
    leakage_audit(counting, aug, manifest, real, b, 0.9, held, real_feats=given)
    assert _outputs(a) == _outputs(b)
    assert sum(calls) == len(aug) + len(held)  # the real images were not embedded again
    with pytest.raises(ValueError, match=f"real_feats has {len(given) - 1} rows"):
        leakage_audit(_embed, aug, manifest, real, b, 0.9, held, real_feats=given[1:])


def test_audit_switches_to_ivf_and_records_recall(tmp_path):
    manifest, (aug, real, held), _ = _data()
    js = leakage_audit(
        _embed, aug, manifest, real, tmp_path, 0.9, held, exact_limit=0, recall_sample=200
    )
    search = json.loads((tmp_path / "leakage.json").read_text())["search"]
    assert search == js["search"]
    assert search["kind"] == "ivf" and search["sample"] == 200
    assert search["recall_at_1_sample"] >= 0.95
    ref_s = _brute(FEATS[N_REAL : N_REAL + N_AUG], FEATS[:N_REAL], 1)[0][:, 0]
    rows = _outputs(tmp_path)[0]
    assert np.mean(np.array([float(r["cos"]) for r in rows]) >= ref_s - 1e-5) >= 0.9
