import dataclasses
import json

import pytest
import torch

from auggen.data.types import LabeledImages
from auggen.infra.training_guard import TrainingDiverged
from auggen.recognition import train as train_mod
from auggen.recognition.augment import AugmentConfig
from auggen.recognition.schedule import LRSchedule
from auggen.recognition.train import FRTrainConfig, load_backbone, train_fr

TINY = dict(backbone="ir18", width=8, input_size=32, embedding_size=32, batch_size=16)


def tiny(**kw) -> FRTrainConfig:
    return FRTrainConfig(**{**TINY, "milestones": (), **kw})


def test_tiny_model_learns_separable_toy_problem(toy, tmp_path):
    cfg = tiny(epochs=6, lr=0.1, augment=AugmentConfig(crop_prob=0, lowres_prob=0))
    net = train_fr(cfg, toy, tmp_path, progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert history[-1]["loss"] < 0.3 * history[0]["loss"]
    assert history[-1]["acc"] > 0.5  # margin-penalised logits: a pessimistic accuracy
    assert not net.training
    # Embeddings of the (unaugmented) training images separate the classes.
    with torch.no_grad():
        feats = torch.nn.functional.normalize(net(train_mod.to_model_input(toy.images)), dim=1)
    centroids = torch.stack([feats[toy.labels == c].mean(0) for c in range(4)])
    pred = (feats @ centroids.T).argmax(1)
    assert (pred == toy.labels).float().mean() > 0.9


def test_outputs_and_load_backbone(toy, tmp_path):
    cfg = tiny(epochs=2, head="cosface", schedule="cosine", warmup_epochs=1)
    net = train_fr(cfg, toy, tmp_path, progress=False)
    for name in (
        "config.json",
        "checkpoint.pt",
        "history.json",
        "history.csv",
        "model.safetensors",
    ):
        assert (tmp_path / name).exists(), name
    assert not list(tmp_path.glob("*.tmp"))
    csv = (tmp_path / "history.csv").read_text().splitlines()
    assert csv[0].startswith("epoch,step,loss,acc,lr") and len(csv) == 3
    loaded = load_backbone(tmp_path)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert FRTrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == cfg


class Interrupted(Exception):
    pass


def test_resume_is_exact(toy, tmp_path, monkeypatch):
    # Default augmentation on, partial FC on, AdaFace statistics and momentum in play.
    cfg = tiny(epochs=3, partial_fc_rate=0.5, warmup_epochs=1, milestones=(2,), lr=0.05)
    full = train_fr(cfg, toy, tmp_path / "full", progress=False)

    save = train_mod._save_checkpoint
    calls = []

    def save_then_die(*args):
        save(*args)
        calls.append(1)
        raise Interrupted

    monkeypatch.setattr(train_mod, "_save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        train_fr(cfg, toy, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train_mod, "_save_checkpoint", save)
    assert calls == [1] and not (tmp_path / "resumed" / "model.safetensors").exists()
    resumed = train_fr(cfg, toy, tmp_path / "resumed", progress=False)

    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    ca = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    for k in ca["head"]:
        assert torch.equal(ca["head"][k], cb["head"][k]), k
    assert [h["loss"] for h in ca["history"]] == pytest.approx([h["loss"] for h in cb["history"]])
    assert len(ca["loss_guard"]["recent"]) == 12  # 3 epochs x 4 steps, restored on resume
    assert ca["loss_guard"]["recent"] == pytest.approx(cb["loss_guard"]["recent"])
    # A finished run resumes to a no-op; another config in the same folder is refused.
    train_fr(cfg, toy, tmp_path / "resumed", progress=False)
    with pytest.raises(ValueError, match="different config"):
        train_fr(tiny(epochs=3, lr=0.2), toy, tmp_path / "resumed", progress=False)


def test_resume_inside_an_epoch_is_exact(toy, tmp_path, monkeypatch):
    # 4 steps per epoch; checkpoints every 3 steps: steps 3, 6 (inside epochs 1 and 2), 9
    # (inside epoch 3), and the final one. Dropout makes the global RNG state matter too.
    kw = dict(epochs=3, partial_fc_rate=0.5, warmup_epochs=1, milestones=(2,), lr=0.05)
    kw.update(dropout=0.2, checkpoint_every=10)
    full = train_fr(tiny(**kw), toy, tmp_path / "full", progress=False)  # no mid-epoch saves
    cfg = tiny(**kw, checkpoint_every_steps=3)

    save = train_mod._save_checkpoint
    calls = []

    def save_then_die_at_step_6(*args):
        save(*args)
        calls.append(args[5])  # the step
        if args[5] == 6:
            raise Interrupted

    monkeypatch.setattr(train_mod, "_save_checkpoint", save_then_die_at_step_6)
    with pytest.raises(Interrupted):
        train_fr(cfg, toy, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train_mod, "_save_checkpoint", save)
    assert calls == [3, 6]
    ck = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["step"]) == (1, 6) and ck["partial"]["totals"][2] == 2 * 16
    assert [h["epoch"] for h in ck["history"]] == [1]
    # Resumed with workers: the batches of steps 7.. are the same whoever makes them.
    resumed = train_fr(
        dataclasses.replace(cfg, num_workers=2), toy, tmp_path / "resumed", progress=False
    )
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    ca = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    for k in ca["head"]:
        assert torch.equal(ca["head"][k], cb["head"][k]), k
    keys = ("epoch", "step", "loss", "acc", "lr")
    assert [[h[k] for k in keys] for h in ca["history"]] == [
        [h[k] for k in keys] for h in cb["history"]
    ]
    assert ca["loss_guard"] == cb["loss_guard"] and cb["partial"] is None
    # The same checkpoint with epochs of another length (here: another batch size) is refused.
    cut = dict(ck, config=dict(ck["config"], batch_size=32), step=5)
    torch.save(cut, tmp_path / "resumed" / "checkpoint.pt")
    with pytest.raises(ValueError, match="does not fit epochs of 2 steps"):
        train_fr(
            tiny(**dict(kw, batch_size=32), checkpoint_every_steps=3),
            toy,
            tmp_path / "resumed",
            progress=False,
        )


def test_absurd_lr_stops_and_keeps_the_last_checkpoint(toy, tmp_path):
    # Epoch 1 (steps 1-4) at lr 0.1; from epoch 2 on the step schedule multiplies it to 1e6.
    cfg = tiny(epochs=3, lr=0.1, milestones=(1,), lr_gamma=1e7)
    with pytest.raises(TrainingDiverged, match="loss nan is not finite") as e:
        train_fr(cfg, toy, tmp_path, progress=False)
    assert 4 < e.value.step <= 8 and f"at step {e.value.step}:" in str(e.value)
    assert "step 4, is kept" in str(e.value) and "(epoch 1)" in str(e.value)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 4)
    assert all(torch.isfinite(v).all() for v in ckpt["backbone"].values())
    assert [h["epoch"] for h in json.loads((tmp_path / "history.json").read_text())] == [1]
    assert not (tmp_path / "model.safetensors").exists()
    assert load_backbone(tmp_path)(torch.zeros(2, 3, 32, 32)).isfinite().all()
    with pytest.raises(ValueError, match="divergence_factor"):
        tiny(divergence_factor=-1.0)


def test_workers_give_the_same_batches(toy, tmp_path):
    cfg = tiny(epochs=1, partial_fc_rate=0.5)
    a = train_fr(cfg, toy, tmp_path / "a", progress=False)
    b = train_fr(
        FRTrainConfig(**{**cfg.to_dict(), "augment": cfg.augment, "num_workers": 1}),
        toy,
        tmp_path / "b",
        progress=False,
    )
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)


def test_data_and_config_errors(toy, tmp_path):
    gap = LabeledImages(toy.images, toy.labels, num_classes=6)
    with pytest.raises(ValueError, match="no images"):
        train_fr(tiny(), gap, tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        train_fr(tiny(batch_size=128), toy, tmp_path)
    with pytest.raises(ValueError, match="amp"):
        tiny(amp="fp8")
    with pytest.raises(ValueError, match="multiple of 16"):
        train_fr(tiny(input_size=30), toy, tmp_path)
    with pytest.raises(ValueError, match="schedule"):
        tiny(schedule="linear")
    with pytest.raises(ValueError, match="partial_fc_rate"):
        tiny(partial_fc_rate=0.0)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backbone(tmp_path / "nothing")


def test_lr_schedule():
    step = LRSchedule(0.1, total_steps=100, warmup_steps=10, kind="step", milestones=(50, 80))
    assert step(0) == pytest.approx(0.01) and step(9) == pytest.approx(0.1)
    assert step(49) == pytest.approx(0.1) and step(50) == pytest.approx(0.01)
    assert step(80) == pytest.approx(0.001)
    cos = LRSchedule(0.1, total_steps=110, warmup_steps=10, kind="cosine")
    assert cos(10) == pytest.approx(0.1) and cos(60) == pytest.approx(0.05)
    assert cos(110) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="milestones"):
        LRSchedule(0.1, 10, milestones=(5, 2))


def test_bf16_autocast_and_channels_last_on_cpu(toy, tmp_path):
    cfg = tiny(epochs=1, amp="bf16", channels_last=True, head="arcface")
    net = train_fr(cfg, toy, tmp_path, progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert torch.isfinite(torch.tensor(history[0]["loss"]))
    assert net(torch.zeros(2, 3, 32, 32)).dtype == torch.float32


@pytest.mark.gpu
def test_trains_on_cuda_with_bf16(toy, tmp_path):
    cfg = tiny(epochs=4, lr=0.1, augment=AugmentConfig(crop_prob=0, lowres_prob=0))
    net = train_fr(cfg, toy, tmp_path, device="cuda", progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history[-1]["loss"] < history[0]["loss"]
    assert next(net.parameters()).is_cuda
    assert (
        load_backbone(tmp_path, device="cuda")(torch.zeros(2, 3, 32, 32, device="cuda"))
        .isfinite()
        .all()
    )


@pytest.mark.parametrize("name", sorted(train_mod.PRESETS))
def test_presets_build(name):
    cfg = train_mod.PRESETS[name]
    with torch.device("meta"):
        from auggen.recognition import build_backbone, build_head

        build_backbone(cfg.backbone, cfg.input_size, cfg.embedding_size, width=cfg.width)
        build_head(cfg.head, cfg.embedding_size, 10, **cfg.head_kwargs)
    assert FRTrainConfig.from_dict(cfg.to_dict()) == cfg
