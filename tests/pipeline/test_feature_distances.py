"""The report's FD/KD table and its labelled montages, on synthetic inputs."""

import numpy as np
import pytest
import torch
from PIL import Image

from auggen.analysis import feature_distances as fdkd
from auggen.analysis.labelled_montage import save_labelled_montage
from auggen.eval.fd_kd import frechet_distance, kernel_distance


def test_spread_keeps_all_or_evenly_spaced():
    assert fdkd.spread(5, 10).tolist() == [0, 1, 2, 3, 4]
    idx = fdkd.spread(1000, 10)
    assert len(idx) == 10 and idx[0] == 0 and idx[-1] == 999
    assert np.all(np.diff(idx) >= 110)


def test_distances_compare_each_set_with_d_orig():
    g = torch.Generator().manual_seed(0)
    orig = torch.randn(60, 5, generator=g)
    feats = {"orig": orig, "repro": torch.randn(30, 5, generator=g), "aug": orig[:40] + 2.0}
    d = fdkd.distances(feats)
    assert list(d) == ["orig_halves", "repro", "aug"]
    assert d["aug"]["fd"] == pytest.approx(frechet_distance(feats["aug"], orig))
    assert d["aug"]["kd"] == pytest.approx(kernel_distance(feats["aug"], orig).value)
    assert d["orig_halves"]["fd"] == pytest.approx(frechet_distance(orig[0::2], orig[1::2]))
    assert d["aug"]["fd"] > 10 * d["repro"]["fd"]  # the shifted set is far, the redraw is not
    assert (d["repro"]["images"], d["repro"]["reference_images"]) == (30, 60)
    # A stage that left no index: its row is absent, the others stay.
    assert list(fdkd.distances({"orig": orig, "aug": feats["aug"]})) == ["orig_halves", "aug"]


def _metric(model, seed, value, bench="lfw", metric="accuracy"):
    return {
        "model": model,
        "seed": str(seed),
        "benchmark": bench,
        "metric": metric,
        "value": str(value),
    }


def test_table_rows_scores_and_paired_accuracy_change():
    rows = [
        _metric("baseline", 0, 0.80),
        _metric("baseline", 1, 0.82),
        _metric("aug", 0, 0.83),
        _metric("aug", 1, 0.84),
        _metric("repro", 0, 0.79),
        _metric("aug", 0, 0.99, metric="rank1"),  # not an accuracy: ignored
    ]
    assert fdkd.accuracy_changes(rows, "aug") == {"lfw": pytest.approx(0.025)}
    assert fdkd.accuracy_changes(rows, "repro") == {"lfw": pytest.approx(-0.01)}
    grid = [
        {"alpha": "0.5", "beta": "0.5", "m_s": "0.1", "m_d": "0.2"},
        {"alpha": "1.1", "beta": "0.8", "m_s": "0.762", "m_d": "0.305"},
    ]
    scores = fdkd.mix_scores(grid, 1.1, 0.8)
    assert scores == {"m_s": 0.762, "m_d": 0.305} and fdkd.mix_scores(grid, 0.2, 0.2) == {}
    dist = {
        name: {"images": 10, "fd": fd, "kd": 1e-3, "kd_std": 0.0, "kd_subsets": 1}
        for name, fd in (("orig_halves", 0.02), ("repro", 0.03), ("aug", 0.09))
    }
    lines = fdkd.table(dist, scores, rows)
    assert lines[0].endswith("| m_s | m_d | Δ lfw accuracy (points) |")
    assert lines[2] == "| D_orig: even vs odd images (floor) | 10 | 0.0200 | 1.00 | – | – | – |"
    assert lines[3] == "| D_repro | 10 | 0.0300 | 1.00 | – | – | \u22121.00 |"
    assert lines[4] == "| D_aug | 10 | 0.0900 | 1.00 | 0.762 | 0.305 | +2.50 |"


def test_labelled_montage_writes_a_png_and_checks_labels(tmp_path):
    img = torch.full((3, 8, 8), 200, dtype=torch.uint8)
    rows = [[img, img, img], [img, img]]
    save_labelled_montage(
        rows, ["i = 1, j = 2\nα = 0.5, β = 0.5", "b"], ["x", "y", "z"], tmp_path / "m.png"
    )
    w, h = Image.open(tmp_path / "m.png").size
    assert w > 100 and h > 100
    with pytest.raises(ValueError, match="2 rows but 1 row labels"):
        save_labelled_montage(rows, ["a"], ["x"], tmp_path / "n.png")
