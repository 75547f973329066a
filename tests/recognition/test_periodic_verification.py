"""Verification on .bin files while FR trains (insightface's callback), on a tiny fixture."""

import csv

import pytest
import torch

from auggen.data.verification_bin import write_verification_bin
from auggen.eval.pair_eval import evaluate_bin
from auggen.recognition.periodic_verification import PeriodicVerification
from auggen.recognition.train import FRTrainConfig, load_backbone, train_fr
from tests.recognition.conftest import toy_faces

TINY = dict(backbone="ir18", width=8, input_size=32, embedding_size=32, batch_size=16)


def _bin(path, seed=1, pairs=20):
    """``pairs`` pairs of toy faces (a held-out draw), alternately same and different class."""
    data = toy_faces(per_class=10, seed=seed)
    g = torch.Generator().manual_seed(seed)
    images, issame = [], []
    for k in range(pairs):
        a = int(torch.randint(len(data.labels), (1,), generator=g))
        same = k % 2 == 0
        pool = (data.labels == data.labels[a]) if same else (data.labels != data.labels[a])
        pool = pool.nonzero().flatten()
        b = int(pool[torch.randint(len(pool), (1,), generator=g)])
        images += [data.images[a], data.images[b]]
        issame.append(same)
    write_verification_bin(path, torch.stack(images), issame, fmt="png")
    return path


def _rows(out):
    with open(out / "verification.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_verifies_every_n_steps_and_at_the_end(tmp_path):
    b = _bin(tmp_path / "toy_pairs.bin")
    cfg = FRTrainConfig(
        **TINY, epochs=2, milestones=(), verify_bins=(str(b),), verify_every_steps=3
    )
    train_fr(cfg, toy_faces(), tmp_path / "run", progress=False)  # 4 steps per epoch
    rows = _rows(tmp_path / "run")
    assert [(int(r["step"]), r["benchmark"]) for r in rows] == [
        (3, "toy_pairs"),
        (6, "toy_pairs"),
        (8, "toy_pairs"),  # the end, off the 3-step rhythm
    ]
    assert all(int(r["num_pairs"]) == 20 for r in rows)
    # The last row is the final model, evaluated independently through evaluate_bin.
    want = evaluate_bin(load_backbone(tmp_path / "run"), b, input_size=32)
    assert float(rows[-1]["accuracy"]) == pytest.approx(want["accuracy"], abs=1e-6)
    assert float(rows[-1]["std"]) == pytest.approx(want["std"], abs=1e-6)


def test_verification_changes_no_weight(tmp_path):
    b = _bin(tmp_path / "v.bin")
    cfg = FRTrainConfig(**TINY, epochs=2, milestones=(), partial_fc_rate=0.5)
    train_fr(cfg, toy_faces(), tmp_path / "plain", progress=False)
    verified = FRTrainConfig(
        **TINY,
        epochs=2,
        milestones=(),
        partial_fc_rate=0.5,
        verify_bins=(str(b),),
        verify_every_steps=1,
    )
    train_fr(verified, toy_faces(), tmp_path / "verified", progress=False)
    assert len(_rows(tmp_path / "verified")) == 8
    plain = (tmp_path / "plain" / "model.safetensors").read_bytes()
    assert (tmp_path / "verified" / "model.safetensors").read_bytes() == plain


def test_resume_drops_rows_of_the_killed_attempt(tmp_path):
    b = _bin(tmp_path / "v.bin")
    out = tmp_path / "run"
    out.mkdir()
    head = "step,epoch,benchmark,accuracy,std,num_pairs\n"
    rows = "".join(f"{s},{s / 4},v,0.5,0.1,20\n" for s in (2, 4, 6))
    (out / "verification.csv").write_text(head + rows)
    v = PeriodicVerification((str(b),), 2, 32, out, torch.device("cpu"), True, resume_step=4)
    assert [int(r["step"]) for r in v.rows] == [2, 4] and v.due(6) and not v.due(5)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 8))
    logged = v.run(net, 6, 1.5)
    assert set(logged) == {"verify/v/accuracy", "verify/v/std"}
    assert [int(r["step"]) for r in _rows(out)] == [2, 4, 6]
    assert float(_rows(out)[-1]["accuracy"]) == pytest.approx(logged["verify/v/accuracy"])
    # Only rank 0 evaluates: another rank reads nothing and writes nothing.
    other = PeriodicVerification((str(b),), 2, 32, tmp_path / "r1", torch.device("cpu"), False)
    assert other.run(net, 2, 0.5) == {} and not (tmp_path / "r1").exists()


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="verify_every_steps=5 needs verify_bins"):
        FRTrainConfig(verify_every_steps=5)
    cfg = FRTrainConfig(**TINY, epochs=1, milestones=(), verify_bins=(str(tmp_path / "no.bin"),))
    with pytest.raises(FileNotFoundError, match="no.bin is not a file"):
        train_fr(cfg, toy_faces(), tmp_path / "run", progress=False)
    # JSON round trip (config.json) keeps the tuple.
    cfg = FRTrainConfig(verify_bins=["a.bin"], verify_every_steps=2)
    assert FRTrainConfig.from_dict(cfg.to_dict()) == cfg and cfg.verify_bins == ("a.bin",)
