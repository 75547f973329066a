"""Crash injection for resume tests: ``AUGGEN_FAIL_AT=stage:step`` raises at that point.

Stages call ``fault_point(stage, step)`` after each unit of work is safely on disk.
"""

from __future__ import annotations

import os

ENV = "AUGGEN_FAIL_AT"


class SimulatedCrash(RuntimeError):
    pass


def fault_point(stage: str, step: int) -> None:
    if os.environ.get(ENV) == f"{stage}:{step}":
        raise SimulatedCrash(f"simulated crash in stage {stage!r} after step {step} ({ENV})")
