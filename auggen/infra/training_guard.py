"""Stop a training run whose loss diverges, before it writes anything from the bad step on.

Both trainers (``train_generator``, ``train_fr``) feed every step's loss to a
:class:`LossGuard` through :class:`StepLosses`. The guard raises :class:`TrainingDiverged`
when a loss is not finite, or when it exceeds the median of the recent losses by more than
``factor`` times ``max(|median|, 1)``. The rule is written for losses of either sign: EDM2's
uncertainty-weighted loss goes below zero as training progresses (about -3 on the tests'
toy data), so a pure ratio to the median would flip or vanish near zero; the floor of 1 is
in loss units, which are O(1) to O(10) for both trainers.

Why factor 100 by default: on normal runs the worst step measured, as ``(loss - median) /
max(|median|, 1)``, stays below 1 (generator 0.7 over 400 micro steps, loss 1.2 down to -2.9;
FR 0.8 on the toy set, where AdaFace batch losses jump from 1.5 to 22), while a diverging run
leaves that range by orders of magnitude at once (``gen.lr=1e6``: 0.8, then 6e13). The
margin-based FR heads bound their loss (the logits are scaled cosines), so there divergence
shows as NaN, which is caught from the first step.

The loss of step ``s`` measures the weights after ``s - 1`` updates: a divergence is seen
one step after the update that caused it. A checkpoint written right after that update
(step ``s - 1``) may hold the bad weights already; the error message says so when it
happens. Checkpoints every few hundred steps make that rare.

Resume: the window of recent losses goes into the checkpoint (``state_dict``), so a resumed
run judges each step exactly as the uninterrupted one would; a checkpoint written before
the guard existed starts with an empty window (the first loss after it becomes the reference).
"""

from __future__ import annotations

import math
import statistics

import torch
import torch.distributed as dist

# How many losses the reference median spans (recent enough to follow a falling loss, long
# enough that one odd batch does not move it).
WINDOW = 50


class TrainingDiverged(RuntimeError):
    """The loss became non-finite or exploded; ``step`` and ``loss`` name the first bad one."""

    def __init__(self, message: str, step: int, loss: float):
        super().__init__(message)
        self.step, self.loss = step, loss


class LossGuard:
    """Judges each step's loss against the median of the last ``window`` accepted losses.

    ``factor=0`` turns the guard off entirely (non-finite losses included), an escape hatch
    for a run that knowingly tolerates them. ``warmup``: losses needed before the spike rule
    applies. The default of 1 is deliberate: an absurd learning rate blows the loss up from
    the second step on, and a longer warm-up would take those values as the reference.
    """

    def __init__(
        self,
        factor: float = 100.0,
        warmup: int = 1,
        window: int = WINDOW,
        knob: str = "divergence_factor",
    ):
        if not factor >= 0:
            raise ValueError(f"factor must be >= 0, got {factor}")
        if warmup < 1 or window < warmup:
            raise ValueError(f"need 1 <= warmup <= window, got {warmup}, {window}")
        self.factor, self.warmup, self.window, self.knob = float(factor), warmup, window, knob
        self.recent: list[float] = []
        self.kept_step: int | None = None
        self.kept_where = ""

    @property
    def enabled(self) -> bool:
        return self.factor > 0

    def note_checkpoint(self, step: int, where: str) -> None:
        """Record the checkpoint that the error message should name as kept."""
        self.kept_step, self.kept_where = int(step), str(where)

    def check(self, step: int, loss: float) -> None:
        """Accept ``loss`` (of 1-based step ``step``) or raise :class:`TrainingDiverged`."""
        if not self.enabled:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            self._fail(step, loss, "is not finite")
        if len(self.recent) >= self.warmup:
            ref = statistics.median(self.recent)
            limit = ref + self.factor * max(abs(ref), 1.0)
            if loss > limit:
                self._fail(
                    step,
                    loss,
                    f"exceeds {limit:.4g} (median {ref:.4g} of the last {len(self.recent)} "
                    f"step loss(es) + {self.factor:g} x max(|median|, 1))",
                )
        self.recent.append(loss)
        del self.recent[: -self.window]

    def _fail(self, step: int, loss: float, why: str):
        if self.kept_step is None:
            kept = "no checkpoint was written before it"
        else:
            kept = f"the last checkpoint, step {self.kept_step}, is kept: {self.kept_where}"
            if self.kept_step >= step - 1:
                kept += (
                    " (written one update before this loss, so it may already hold the "
                    "diverged weights)"
                )
        raise TrainingDiverged(
            f"training diverged at step {step}: loss {loss:.6g} {why}. Stopped without "
            f"writing anything for this step or later; {kept}. Lower the learning rate "
            f"(lr) and rerun, or set {self.knob}=0 to turn this check off.",
            step,
            loss,
        )

    def state_dict(self) -> dict:
        return {"recent": list(self.recent)}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore the window; ``None`` (a checkpoint from before the guard) starts empty."""
        self.recent = [float(x) for x in (state or {}).get("recent", [])][-self.window :]


class StepLosses:
    """Per-step losses kept on the device and checked in batches of ``every`` steps.

    Each batch costs one host sync and, with ``world_size > 1``, one all-reduce: every rank
    then judges the same mean losses, so all ranks raise at the same step and none is left
    waiting in a collective. Callers must call :meth:`flush` at the same steps on all ranks
    (``add`` flushes on its own every ``every`` steps) and before writing any checkpoint or
    weights, so nothing is written from a step whose loss was not judged.
    """

    def __init__(self, guard: LossGuard, every: int = 1, world_size: int = 1):
        self.guard, self.every, self.world_size = guard, max(1, int(every)), world_size
        self.steps: list[int] = []
        self.losses: list[torch.Tensor] = []

    def add(self, step: int, loss: torch.Tensor) -> None:
        if not self.guard.enabled:
            return
        self.steps.append(int(step))
        self.losses.append(loss.detach().float().mean())
        if len(self.steps) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.steps:
            return
        values = torch.stack(self.losses)
        if self.world_size > 1:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values /= self.world_size
        steps, self.steps, self.losses = self.steps, [], []
        for step, loss in zip(steps, values.tolist()):
            self.guard.check(step, loss)
