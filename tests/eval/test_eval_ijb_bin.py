import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auggen.data import LabeledImages, encode_image, write_verification_bin
from auggen.eval import (
    evaluate_bin,
    evaluate_identification,
    evaluate_ijb,
    evaluate_labeled_pairs,
    extract_embeddings,
    make_verification_pairs,
    read_metrics,
    tar_at_far,
    template_features,
    verification_accuracy,
    write_metrics,
)


class Linear(nn.Module):
    def __init__(self, size=8, dim=6):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * size * size, dim)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _faces(n_ids, per_id, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(40, 216, (n_ids, 3, size, size), generator=g)
    noise = torch.randint(-30, 31, (n_ids, per_id, 3, size, size), generator=g)
    imgs = (base[:, None] + noise).clamp(0, 255).to(torch.uint8).flatten(0, 1)
    return imgs, torch.arange(n_ids).repeat_interleave(per_id)


def test_template_features_hand_made():
    f = torch.tensor([[1.0, 0], [0, 1], [0, 1], [1, 0], [0, 1]])
    templates = [7, 7, 7, 3, 3]
    medias = [1, 2, 2, 1, 9]  # media 1 appears in both templates: pooled per template
    uniq, t = template_features(f, templates, medias)
    assert uniq.tolist() == [3, 7]
    s = 2**-0.5
    torch.testing.assert_close(t, torch.tensor([[s, s], [s, s]]))
    uniq, t = template_features(f[:3], [7, 7, 7], [1, 1, 2])  # media means (.5,.5), (0,1)
    torch.testing.assert_close(t, F.normalize(torch.tensor([[0.5, 1.5]])))


def _write_ijb(root, images, templates, medias, pairs):
    (root / "meta").mkdir(parents=True)
    (root / "loose_crop").mkdir()
    lines = []
    for i, (img, t, m) in enumerate(zip(images, templates, medias)):
        (root / "loose_crop" / f"{i + 1}.jpg").write_bytes(encode_image(img, "png"))
        lines.append(f"{i + 1}.jpg {t} {m}\n")
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("".join(lines))
    (root / "meta" / "ijbc_template_pair_label.txt").write_text(
        "".join(f"{a} {b} {int(y)}\n" for a, b, y in pairs)
    )


def test_evaluate_ijb_vs_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    images, ids = _faces(6, 6)
    # Two templates per identity (ids 100+2k, 101+2k), images spread over a few media.
    templates = [100 + 2 * int(y) + (k % 2) for k, y in enumerate(ids.tolist())]
    medias = [int(m) for m in rng.integers(0, 3, len(ids))]
    tids = sorted(set(templates))
    pairs = [(a, b, (a - 100) // 2 == (b - 100) // 2) for a in tids for b in tids if a < b]
    _write_ijb(tmp_path, images, templates, medias, pairs)
    model = Linear()
    got = evaluate_ijb(model, tmp_path, input_size=8, fars=(1e-2, 5e-2, 1e-1), chunk=7)
    # Brute force: per-template dict of media -> list of unit image features.
    feats = extract_embeddings(model, images)
    per_t = {}
    for f, t, m in zip(feats, templates, medias):
        per_t.setdefault(t, {}).setdefault(m, []).append(f)
    tf = {}
    for t, by_media in per_t.items():
        v = sum(torch.stack(fs).mean(0) for fs in by_media.values()) / len(by_media)
        tf[t] = v / v.norm()
    scores = np.array([float(tf[a] @ tf[b]) for a, b, _ in pairs])
    same = np.array([y for _, _, y in pairs])
    assert got["num_pairs"] == len(pairs) == 66 and got["num_templates"] == 12
    assert got["TAR@FAR=1e-1"] == pytest.approx(tar_at_far(scores, same, 0.1), abs=1e-6)
    assert got["TAR@FAR=0.05"] == pytest.approx(tar_at_far(scores, same, 0.05), abs=1e-6)
    assert "TAR@FAR=1e-2" not in got  # not measurable with 60 impostor pairs
    (tmp_path / "meta" / "ijbc_template_pair_label.txt").write_text("100 999 0\n")
    with pytest.raises(ValueError, match="999"):
        evaluate_ijb(model, tmp_path, input_size=8)


def test_evaluate_bin_and_labeled_pairs(tmp_path):
    images, ids = _faces(10, 4)
    a, b, same = make_verification_pairs(ids, 40, seed=0)
    pairs = torch.stack([images[a], images[b]], 1).flatten(0, 1)
    path = write_verification_bin(tmp_path / "t.bin", pairs, same, fmt="png")
    model = Linear()
    got = evaluate_bin(model, path, input_size=None, nfolds=5)
    feats = extract_embeddings(model, images)
    scores = (feats[a] * feats[b]).sum(1)
    assert (got["accuracy"], got["std"]) == pytest.approx(verification_accuracy(scores, same, 5))
    assert got["num_pairs"] == 40 and got["accuracy"] > 0.6
    data = LabeledImages(images, ids)
    again = evaluate_labeled_pairs(model, data, a, b, nfolds=5)
    assert again["accuracy"] == pytest.approx(got["accuracy"])
    assert again["TAR@FAR=1e-1"] == pytest.approx(got["TAR@FAR=1e-1"])


def test_evaluate_identification_and_metrics_file(tmp_path):
    images, ids = _faces(8, 3)
    data = LabeledImages(images, ids)
    gallery = data.subset(torch.arange(0, 24, 3))
    probe = data.subset(torch.tensor([i for i in range(24) if i % 3]))
    res = evaluate_identification(Linear(), probe, gallery, _faces(5, 2, seed=9)[0])
    assert res["num_probes"] == 16 and res["num_gallery"] == 18 and 0 <= res["rank1"] <= 1
    path = write_metrics(tmp_path / "m" / "metrics.json", {"acc": np.float32(0.5), **res})
    back = read_metrics(path)
    assert back["acc"] == 0.5 and back["rank1"] == res["rank1"]
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
    assert json.loads(path.read_text())["num_probes"] == 16
