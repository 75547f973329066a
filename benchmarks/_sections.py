"""A run of named sections that survives its own failures and a kill: what the GPU check uses.

Each section gets a time budget (its share of the run's ``--budget-s``) and a ``Section``
context: ``ctx.add(row)`` prints the row and appends it to the CSV and the markdown at once
(flushed and fsynced), so a kill at any moment keeps every row finished before it;
``ctx.time_left()`` lets a section stop early between items. A section that raises has its
error recorded as a row, and the next section runs. A hard limit (SIGALRM, budget + grace)
interrupts a section stuck in Python code; a subprocess a section starts gets ``timeout=``.
"""

from __future__ import annotations

import csv
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIELDS = ["section", "name", "shape", "dtype", "variant", "ms_p20", "ms_p50", "ms_p80",
          "value", "unit", "target", "ok", "note", "device"]  # fmt: skip
GRACE_S = 30.0  # past its budget a section is interrupted (SIGALRM) this much later


class SectionTimeout(Exception):
    """Raised inside a section that ran past its budget plus the grace period."""


@dataclass
class SectionSpec:
    name: str
    about: str  # one line: what it does
    cost_gpu_s: float  # expected wall time on one H100/H200 (warm pip cache)
    cost_cpu_s: float  # expected on a small CPU machine; 0: does not run on the CPU
    run: Callable  # run(ctx) -> None
    plan: Callable | None = None  # plan(gpu: bool) -> list of strings (what --dry-run shows)


@dataclass
class Output:
    """The CSV and markdown files every row goes to the moment it exists."""

    stem: Path
    device: str
    fresh: bool = True  # False: a re-executed run appends to the files of its first part

    def __post_init__(self):
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        self.csv, self.md = self.stem.with_suffix(".csv"), self.stem.with_suffix(".md")
        if self.fresh:
            for p in (self.csv, self.md):
                p.unlink(missing_ok=True)
            self._append(self.csv, ",".join(FIELDS) + "\n")
            self._append(self.md, f"# gpu_check on {self.device}\n")

    @staticmethod
    def _append(path: Path, text: str) -> None:
        with open(path, "a", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def row(self, r: dict) -> None:
        r = {**r, "device": self.device}
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore").writerow(r)
            f.flush()
            os.fsync(f.fileno())
        cells = [str(r.get(k, "")).replace("|", "/") for k in FIELDS[1:-1]]
        self._append(self.md, "| " + " | ".join(cells) + " |\n")

    def heading(self, name: str, about: str, budget_s: float) -> None:
        head = "| " + " | ".join(FIELDS[1:-1]) + " |\n|" + "---|" * (len(FIELDS) - 2) + "\n"
        self._append(self.md, f"\n## {name} (budget {budget_s:.0f} s): {about}\n\n{head}")

    def line(self, text: str) -> None:
        self._append(self.md, f"\n{text}\n")


@dataclass
class Section:
    """What a running section sees: its budget, and where its rows go."""

    name: str
    budget_s: float
    out: Output
    args: object
    started: float = field(default_factory=time.monotonic)
    rows: list = field(default_factory=list)

    def time_left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def add(self, **r) -> dict:
        r = {"section": self.name, **r}
        for k in ("ms_p20", "ms_p50", "ms_p80", "value"):
            if isinstance(r.get(k), float):
                r[k] = round(r[k], 4)
        self.rows.append(r)
        self.out.row(r)
        shown = " ".join(f"{k}={r[k]}" for k in FIELDS[1:-1] if r.get(k) not in (None, ""))
        say(f"{self.name}: {shown}")
        return r

    def skip_rest(self, what: str) -> None:
        self.add(name="budget", note=f"budget reached: {what} not run")


def say(msg: str) -> None:
    print(f"[gpu_check] {msg}", flush=True)


def _alarm(signum, frame):
    raise SectionTimeout("past its budget")


def allocate(specs: list[SectionSpec], budget_s: float, gpu: bool) -> dict[str, float]:
    """Each section's budget: its expected cost, scaled to fit ``budget_s`` (slack shared out
    in proportion, so no section is starved by another's estimate)."""
    cost = {s.name: s.cost_gpu_s if gpu else s.cost_cpu_s for s in specs}
    total = sum(cost.values()) or 1.0
    return {n: budget_s * c / total for n, c in cost.items()}


def run_sections(specs: list[SectionSpec], out: Output, args, budget_s: float, gpu: bool,
                 after: Callable[[str, Section], bool] | None = None,
                 grace_s: float = GRACE_S) -> list[dict]:  # fmt: skip
    """Runs ``specs`` in order; returns one status dict per section. ``after(name, ctx)``
    returning True stops the run there (the build section re-executes the script)."""
    t_end = time.monotonic() + budget_s
    statuses = []
    for k, spec in enumerate(specs):
        left = t_end - time.monotonic()
        share = allocate(specs[k:], max(left, 0.0), gpu)[spec.name]
        ctx = Section(spec.name, share, out, args)
        out.heading(spec.name, spec.about, share)
        say(f"== {spec.name} (budget {share:.0f} s of {left:.0f} s left): {spec.about}")
        status, err = "ok", ""
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, max(share, 0.1) + grace_s)
        try:
            if left <= 0.0:
                status = "skipped"
                err = "the run's budget is spent"
            else:
                spec.run(ctx)
        except BaseException as e:  # record and go on; a kill (SIGKILL) never gets here
            if isinstance(e, KeyboardInterrupt):
                raise
            status = "timeout" if isinstance(e, SectionTimeout) else "failed"
            err = f"{type(e).__name__}: {e}"
            say(f"{spec.name} {status}: {err}")
            traceback.print_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        wall = time.monotonic() - ctx.started
        st = ctx.add(name="section status", value=round(wall, 1), unit="s", ok=status == "ok",
                     note=f"{status}{': ' + err[:300] if err else ''}")  # fmt: skip
        statuses.append(st)
        if after is not None and status == "ok" and after(spec.name, ctx):
            break
    return statuses
