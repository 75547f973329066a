"""auggen.infra.training_loop on a toy task: exact resume, callback steps, the divergence guard."""

import math

import pytest
import torch
from torch import nn

from auggen.infra import training_loop
from auggen.infra.faults import SimulatedCrash
from auggen.infra.runtime import Runtime
from auggen.infra.training_guard import TrainingDiverged

EPOCHS, STEPS = 3, 4


class ToyTask:
    """Least squares on seeded batches; a checkpoint every ``every`` steps and each epoch end."""

    name, compile, check_every, tensorboard, divergence_factor = "toy", False, 2, False, 100.0

    def __init__(self, out, every=3, nan_at=None, callbacks=()):
        torch.manual_seed(0)
        self.out, self.every, self.nan_at, self.callbacks = out, every, nan_at, list(callbacks)
        self.epochs, self.steps_per_epoch = EPOCHS, STEPS
        self.model = nn.Linear(3, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.saved, self.events = [], []

    def resume(self, loop):
        path = self.out / "ckpt.pt"
        if not path.exists():
            return None
        ck = torch.load(path, weights_only=True)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        first = ck["step"] - ck["epoch"] * STEPS
        return training_loop.Resumed(ck["step"], ck["epoch"], first, ck["guard"], str(path))

    def prepare(self, loop):
        return self.callbacks

    def bar_args(self, epoch):
        return {"desc": f"toy {epoch}"}

    def epoch_batches(self, loop):
        for i in range(loop.first, STEPS):
            g = torch.Generator().manual_seed(1000 * loop.epoch + i)
            x = torch.randn(8, 3, generator=g)
            yield x, x.sum(1, keepdim=True)

    def forward(self, loop, batch):
        x, y = batch
        loss = ((loop.train_model(x) - y) ** 2).mean()
        return loss * math.nan if loop.step + 1 == self.nan_at else loss

    def update(self, loop, loss):
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def checkpoint_due(self, loop):
        return loop.step % self.every == 0 and loop.i + 1 < STEPS

    def end_epoch(self, loop):
        self.events.append(("epoch_end", loop.epoch, loop.step))
        return True

    def save(self, loop, epoch_end):
        epoch = loop.epoch + 1 if epoch_end else loop.epoch
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict()}
        state.update(step=loop.step, epoch=epoch, guard=loop.guard.state_dict())
        torch.save(state, self.out / "ckpt.pt")
        self.saved.append(loop.step)
        return f"ckpt at {loop.step}"

    def finish(self, loop):
        self.events.append(("finish", loop.step))


def _run(task, out):
    return training_loop.run(task, Runtime(), out, progress=False)


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    full = ToyTask(tmp_path / "full")
    (tmp_path / "full").mkdir()
    _run(full, tmp_path / "full")
    assert full.saved == [3, 4, 6, 8, 9, 12]  # every 3 steps inside an epoch, each epoch end
    assert full.events[-1] == ("finish", 12)

    out = tmp_path / "resumed"
    out.mkdir()
    monkeypatch.setenv("AUGGEN_FAIL_AT", "toy.step:6")  # after the mid-epoch save of step 6
    killed = ToyTask(out)
    with pytest.raises(SimulatedCrash):
        _run(killed, out)
    assert killed.saved == [3, 4, 6]
    monkeypatch.delenv("AUGGEN_FAIL_AT")
    resumed = ToyTask(out)
    loop = _run(resumed, out)
    assert loop.resumed.step == 6 and resumed.saved == [8, 9, 12]
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    # The guard's window went through the checkpoint: the same recent losses as uninterrupted.
    ck_full = torch.load(tmp_path / "full" / "ckpt.pt", weights_only=True)
    ck_res = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck_full["guard"]["recent"] == ck_res["guard"]["recent"]
    assert len(ck_res["guard"]["recent"]) == EPOCHS * STEPS
    # A finished run resumes to no steps at all.
    again = ToyTask(out)
    assert _run(again, out).step == 12 and again.saved == []


class Recorder(training_loop.Callback):
    def __init__(self):
        self.log = []

    def on_epoch_start(self, loop):
        self.log.append(("start", loop.epoch, loop.first))

    def on_step(self, loop):
        self.log.append(("step", loop.epoch, loop.i, loop.step))

    def on_end(self, loop):
        self.log.append(("end", loop.step))


def test_callbacks_fire_at_their_steps(tmp_path):
    rec, every5 = Recorder(), []
    periodic = training_loop.Periodic(5, lambda loop: every5.append(loop.step))
    task = ToyTask(tmp_path, every=100, callbacks=[rec, periodic])
    _run(task, tmp_path)
    assert every5 == [5, 10]
    steps = [e for e in rec.log if e[0] == "step"]
    assert steps == [("step", k // STEPS, k % STEPS, k + 1) for k in range(EPOCHS * STEPS)]
    assert [e for e in rec.log if e[0] == "start"] == [("start", e, 0) for e in range(EPOCHS)]
    assert rec.log[-1] == ("end", 12) and rec.log.count(("end", 12)) == 1
    assert task.saved == [4, 8, 12]  # epoch ends only


def test_nan_loss_stops_with_the_guards_message(tmp_path):
    # Losses are judged every 2 steps, and always before a checkpoint is written: the NaN of
    # step 5 stops the run before step 6's save, naming the checkpoint of step 4 as kept.
    task = ToyTask(tmp_path, nan_at=5)
    with pytest.raises(TrainingDiverged, match="at step 5: loss nan is not finite") as e:
        _run(task, tmp_path)
    assert e.value.step == 5 and "step 4, is kept: ckpt at 4" in str(e.value)
    assert task.saved == [3, 4]
    # Caught before the mid-epoch checkpoint that would have held step 5 (every=5).
    task = ToyTask(tmp_path / "b", every=5, nan_at=5)
    (tmp_path / "b").mkdir()
    with pytest.raises(TrainingDiverged, match="at step 5"):
        _run(task, tmp_path / "b")
    assert task.saved == [4]


def test_generator_killed_at_the_loops_fault_point_resumes_exactly(tmp_path, monkeypatch):
    from auggen.generator.train import GenTrainConfig, train_generator
    from tests.generator.test_train import MICRO, _data, _tensors

    cfg = GenTrainConfig(steps=4, checkpoint_every=2, **MICRO)
    train_generator(cfg, _data(), tmp_path / "full", progress=False)
    monkeypatch.setenv("AUGGEN_FAIL_AT", "train_gen.step:2")  # right after step 2's checkpoint
    with pytest.raises(SimulatedCrash):
        train_generator(cfg, _data(), tmp_path / "resumed", progress=False)
    assert _tensors(tmp_path / "resumed")[0]["step"] == 2
    monkeypatch.delenv("AUGGEN_FAIL_AT")
    train_generator(cfg, _data(), tmp_path / "resumed", progress=False)
    (sa, ta), (sb, tb) = _tensors(tmp_path / "full"), _tensors(tmp_path / "resumed")
    assert sa["step"] == sb["step"] == 4 and set(ta) == set(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert sa["history"] == [
        dict(h, img_per_s=a["img_per_s"]) for h, a in zip(sb["history"], sa["history"])
    ]
