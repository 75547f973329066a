"""TensorBoard events from both trainers, read back; a clear error without tensorboard."""

import dataclasses
import json
import sys

import numpy as np
import pytest

from auggen.generator.train import GenTrainConfig, train_generator
from auggen.recognition import train as fr_train
from auggen.recognition.train import FRTrainConfig, train_fr
from tests.generator.test_train import MICRO, _data
from tests.recognition.conftest import toy_faces

TINY_FR = dict(backbone="ir18", width=8, input_size=32, embedding_size=32, batch_size=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def _events(log_dir):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
    acc.Reload()
    return acc


def test_fr_writes_readable_events(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setattr(fr_train, "_LOG_EVERY", 2)
    cfg = FRTrainConfig(**TINY_FR, epochs=2, milestones=(), tensorboard=True)
    train_fr(cfg, toy_faces(), tmp_path, progress=False)  # 4 steps per epoch
    acc = _events(tmp_path / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/lr", "train/img_per_s", "train/grad_norm", "epoch/loss"):
        assert tag in tags, tag
    # The AdaFace head exposes its running feature-norm statistics.
    assert {"adaface/feature_norm_mean", "adaface/feature_norm_std"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8]
    assert all(e.value > 0 and np.isfinite(e.value) for e in acc.Scalars("train/grad_norm"))
    history = json.loads((tmp_path / "history.json").read_text())
    epoch_loss = acc.Scalars("epoch/loss")
    assert [e.step for e in epoch_loss] == [h["step"] for h in history]
    np.testing.assert_allclose([e.value for e in epoch_loss], [h["loss"] for h in history], 1e-6)


def test_fr_without_adaface_logs_no_feature_norms(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setattr(fr_train, "_LOG_EVERY", 2)
    cfg = FRTrainConfig(**TINY_FR, epochs=1, milestones=(), head="cosface", tensorboard=True)
    train_fr(cfg, toy_faces(), tmp_path, progress=False)
    tags = set(_events(tmp_path / "tensorboard").Tags()["scalars"])
    assert "train/grad_norm" in tags and not any(t.startswith("adaface/") for t in tags)


def test_generator_writes_readable_events(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = GenTrainConfig(steps=4, checkpoint_every=100, tensorboard=True, **MICRO)
    train_generator(cfg, _data(), tmp_path, progress=False)
    acc = _events(tmp_path / "tensorboard")
    hist = json.loads((tmp_path / "history.json").read_text())
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [h["step"] for h in hist] == [1, 2, 3, 4]
    np.testing.assert_allclose([e.value for e in loss], [h["loss"] for h in hist], rtol=1e-6)
    assert len(acc.Scalars("train/grad_norm")) == 4
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([h["lr"] for h in hist])


def test_tensorboard_off_writes_nothing(tmp_path):
    cfg = GenTrainConfig(steps=2, checkpoint_every=100, **MICRO)
    train_generator(cfg, _data(), tmp_path, progress=False)
    assert not (tmp_path / "tensorboard").exists()


def test_missing_tensorboard_is_named_only_when_asked(tmp_path, monkeypatch):
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    cfg = GenTrainConfig(steps=1, checkpoint_every=100, tensorboard=True, **MICRO)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        train_generator(cfg, _data(), tmp_path / "gen", progress=False)
    fr = FRTrainConfig(**TINY_FR, epochs=1, milestones=(), tensorboard=True)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        train_fr(fr, toy_faces(), tmp_path / "fr", progress=False)
    # Off: the same missing package is no obstacle.
    off = dataclasses.replace(cfg, tensorboard=False)
    train_generator(off, _data(), tmp_path / "g2", progress=False)
    assert (tmp_path / "g2" / "history.json").exists()
