"""Fault injection for resume tests: ``AUGGEN_FAIL_AT=stage:step[:rank]`` at that point.

Stages call ``fault_point(stage, step)`` after each unit of work is safely on disk. The
point raises :class:`SimulatedCrash`, or, with ``AUGGEN_FAULT=kill``, kills this process
with SIGKILL (as the OOM killer would), or, with ``AUGGEN_FAULT=hang``, sleeps for good (a
stuck rank). A rank after the step limits the fault to that torchrun rank.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "AUGGEN_FAIL_AT"
MODE_ENV = "AUGGEN_FAULT"


class SimulatedCrash(RuntimeError):
    pass


def fault_point(stage: str, step: int) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[:2] != [stage, str(step)]:
        return
    if len(parts) > 2 and parts[2] != os.environ.get("RANK", "0"):
        return
    mode = os.environ.get(MODE_ENV, "raise")
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hang":
        while True:
            time.sleep(60)
    raise SimulatedCrash(f"simulated crash in stage {stage!r} after step {step} ({ENV})")
