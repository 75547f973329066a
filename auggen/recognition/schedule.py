"""Learning-rate schedule for FR training: linear warm-up, then step or cosine decay.

Stateless: the rate is a function of the global step, so the step counter (kept in the
checkpoint) is the whole scheduler state and a resumed run continues on the same curve.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    kind: str = "step"
    milestones: tuple[int, ...] = ()  # in steps, for kind="step"
    gamma: float = 0.1
    min_lr: float = 0.0  # floor of the cosine

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.kind!r}")
        if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got "
                f"{self.total_steps}, {self.warmup_steps}"
            )
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")

    def __call__(self, step: int) -> float:
        """Learning rate for optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "step":
            return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, step)
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
