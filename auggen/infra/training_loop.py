"""One training loop for the generator and the recognisers (the shape of edm2's training_loop).

The loop owns what every trainer needs and nothing a trainer decides:

- resume: the task loads its newest checkpoint; the loop restores the divergence guard's
  window from it and names it as the checkpoint kept should the loss diverge later;
- the divergence guard (``auggen.infra.training_guard``): every step's loss is judged, all ranks
  alike, before anything from that step is written;
- checkpoints: the loop asks the task when one is due (inside an epoch and at its end), judges
  the pending losses, lets the task write it atomically, then waits for every rank and passes
  the fault point ``<name>.step`` (``auggen.infra.faults``);
- TensorBoard (``auggen.infra.training_log``), purged past the resumed step, closed at the end;
- the DDP wrap (more than one rank) and ``torch.compile`` when the task asks for it;
- the progress bar (rank 0, one per epoch) and the :class:`Callback` objects that run after
  each step (logging, verification, snapshots, sample grids), in the order the task lists them.

A trainer supplies a task object (:class:`TrainTask` lists what it has): its model, the
batches of an epoch, what one step computes (``forward``) and applies (``update``), when a
checkpoint is due and how it is written. A run without epochs (the generator) is one epoch of
all its steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from auggen.infra import runtime
from auggen.infra.faults import fault_point
from auggen.infra.training_guard import LossGuard, StepLosses
from auggen.infra.training_log import TrainingLog


@dataclass
class Resumed:
    """Where a checkpoint left the run: ``step`` updates done, in epoch ``epoch`` at its step
    ``first``; the guard's saved window; ``where`` names the checkpoint in error messages."""

    step: int
    epoch: int = 0
    first: int = 0
    guard_state: dict | None = None
    where: str = ""


@dataclass
class LoopState:
    """What the task and the callbacks see of the running loop."""

    rt: runtime.Runtime
    out_dir: Path
    guard: LossGuard
    tb: TrainingLog | None = None
    resumed: Resumed | None = None
    train_model: nn.Module | None = None  # the model the forward pass calls (DDP/compiled)
    bar: Any = None
    step: int = 0  # updates done
    epoch: int = 0
    first: int = 0  # the step inside the epoch where this epoch (re)started
    i: int = 0  # the current step's index inside its epoch
    t0: float = 0.0  # perf_counter at the start of this epoch's steps
    loss: torch.Tensor | None = None  # the last step's loss

    @property
    def device(self) -> torch.device:
        return self.rt.device

    @property
    def is_main(self) -> bool:
        return self.rt.is_main


class Callback:
    """Work done after steps (logging, verification, grids); every method is optional."""

    def on_epoch_start(self, loop: LoopState) -> None:
        pass

    def on_step(self, loop: LoopState) -> None:
        pass

    def on_end(self, loop: LoopState) -> None:
        pass


class Periodic(Callback):
    """``fn(loop)`` after every ``every``-th step (0: never); on rank 0 only if ``main_only``."""

    def __init__(self, every: int, fn, main_only: bool = True):
        self.every, self.fn, self.main_only = int(every), fn, main_only

    def on_step(self, loop: LoopState) -> None:
        if self.every and loop.step % self.every == 0 and (loop.is_main or not self.main_only):
            self.fn(loop)


class TrainTask(Protocol):
    """What a trainer hands the loop (see ``generator/train.py`` and ``recognition/train.py``)."""

    name: str  # "train_gen": bar, barrier and fault-point names
    model: nn.Module  # what DDP wraps
    epochs: int
    steps_per_epoch: int
    divergence_factor: float  # LossGuard's factor (0: off)
    check_every: int  # steps between loss checks (each one a host sync)
    tensorboard: bool
    compile: bool

    def resume(self, loop: LoopState) -> Resumed | None: ...  # load the newest checkpoint
    def prepare(self, loop: LoopState) -> list[Callback]: ...  # after resume, before DDP
    def bar_args(self, epoch: int) -> dict: ...  # tqdm's desc, unit, leave
    def epoch_batches(self, loop: LoopState): ...  # the epoch's batches from loop.first on
    def forward(self, loop: LoopState, batch) -> torch.Tensor: ...  # the step's loss
    def update(self, loop: LoopState, loss: torch.Tensor) -> None: ...  # backward + optimizer
    def checkpoint_due(self, loop: LoopState) -> bool: ...  # after a step, inside the epoch
    def end_epoch(self, loop: LoopState) -> bool: ...  # -> whether to save at the epoch end
    def save(self, loop: LoopState, epoch_end: bool) -> str: ...  # -> where, for the guard
    def finish(self, loop: LoopState) -> None: ...  # after the last step, TensorBoard closed


def run(task: TrainTask, rt: runtime.Runtime, out_dir: Path, progress: bool) -> LoopState:
    """Train ``task`` to its last step (or resume and finish it); -> the final loop state."""
    loop = LoopState(rt=rt, out_dir=Path(out_dir), guard=LossGuard(task.divergence_factor))

    # Resume.
    resumed = loop.resumed = task.resume(loop)
    if resumed is not None:
        loop.step, loop.epoch, loop.first = resumed.step, resumed.epoch, resumed.first
        loop.guard.load_state_dict(resumed.guard_state)
        loop.guard.note_checkpoint(resumed.step, resumed.where)

    # Logging and callbacks.
    resume_step = loop.step if resumed is not None else None
    loop.tb = TrainingLog(loop.out_dir / "tensorboard", task.tensorboard, rt.is_main, resume_step)
    callbacks = task.prepare(loop)
    # All ranks judge the same all-reduced losses, so they stop together (no rank hangs).
    step_losses = StepLosses(loop.guard, every=task.check_every, world_size=rt.world_size)
    runtime.barrier(f"{task.name} start", rt)

    # Distribute.
    model = task.model
    if rt.world_size > 1:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    loop.train_model = torch.compile(model) if task.compile else model

    # Train.
    for epoch in range(loop.epoch, task.epochs):
        loop.epoch = epoch
        _train_epoch(task, loop, step_losses, callbacks, progress)
        loop.first = 0

    # Finish.
    for cb in callbacks:
        cb.on_end(loop)
    loop.tb.close()
    task.finish(loop)
    runtime.barrier(f"{task.name} end", rt)
    return loop


def _train_epoch(task, loop: LoopState, step_losses: StepLosses, callbacks, progress) -> None:
    rt = loop.rt
    batches = task.epoch_batches(loop)
    loop.bar = tqdm(
        total=task.steps_per_epoch,
        initial=loop.first,
        disable=not (progress and rt.is_main),
        **task.bar_args(loop.epoch),
    )
    for cb in callbacks:
        cb.on_epoch_start(loop)
    loop.t0 = time.perf_counter()
    for i, batch in enumerate(batches, start=loop.first):
        loop.i = i
        # One step: its loss is judged before anything from it is kept.
        loss = loop.loss = task.forward(loop, batch)
        step_losses.add(loop.step + 1, loss)
        task.update(loop, loss)
        loop.step += 1
        for cb in callbacks:
            cb.on_step(loop)
        loop.bar.update()
        if task.checkpoint_due(loop):
            _save(task, loop, step_losses, epoch_end=False)
            fault_point(f"{task.name}.step", loop.step)
    loop.bar.close()

    # Epoch end: every loss judged before the epoch's history and checkpoint.
    step_losses.flush()
    if task.end_epoch(loop):
        _save(task, loop, step_losses, epoch_end=True)
    runtime.barrier(f"{task.name} epoch end", rt)


def _save(task, loop: LoopState, step_losses: StepLosses, epoch_end: bool) -> None:
    step_losses.flush()  # judge every loss before writing
    where = task.save(loop, epoch_end)
    loop.guard.note_checkpoint(loop.step, where)
    runtime.barrier(f"{task.name} checkpoint at step {loop.step}", loop.rt)
