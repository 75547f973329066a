"""Verification on the user's ``.bin`` files while FR trains (insightface's
``CallBackVerification``): every N steps and at the end, rank 0 embeds each benchmark with
the current backbone and runs insightface's 10-fold protocol.

Results go to ``verification.csv`` beside history.csv (one row per step and benchmark). A
resumed run keeps the rows up to its checkpoint's step and drops those of the killed attempt
after it, so the file reads as if the run had not stopped. Evaluation changes nothing the
training sees: no random numbers are drawn and BatchNorm statistics are left as they were.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from auggen.data.verification_bin import read_verification_bin
from auggen.eval.pair_eval import evaluate_pairs
from auggen.infra.files import atomic_write_bytes

COLUMNS = ("step", "epoch", "benchmark", "accuracy", "std", "num_pairs")


def benchmark_name(path: str | Path) -> str:
    """``/data/lfw.bin`` -> ``lfw``: the name in verification.csv and TensorBoard."""
    return Path(path).stem


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class PeriodicVerification:
    """Call ``due(step)``, then ``run(backbone, step, epoch)`` on every rank; only rank 0
    (``active``) reads the files and evaluates. Inactive when ``bins`` is empty."""

    def __init__(
        self,
        bins: tuple[str, ...],
        every_steps: int,
        input_size: int,
        out_dir: Path,
        device: torch.device,
        active: bool,
        resume_step: int = 0,
        batch_size: int = 128,
    ):
        for b in bins:  # every rank checks, so all stop together on a wrong path
            if not Path(b).is_file():
                raise FileNotFoundError(f"verify_bins: {b} is not a file")
        names = [benchmark_name(b) for b in bins]
        if len(set(names)) != len(names):
            raise ValueError(f"verify_bins: two files share a name: {list(bins)}")
        self.every, self.device, self.batch_size = every_steps, device, batch_size
        self.active = active and bool(bins)
        self.path = Path(out_dir) / "verification.csv"
        self.sets = []
        self.rows: list[dict] = []
        self.last_step = None
        if not self.active:
            return
        # Decoded once and held: insightface's callback does the same (LFW at 112 px: 450 MB).
        self.sets = [(n, *read_verification_bin(b, size=input_size)) for n, b in zip(names, bins)]
        self.rows = [r for r in read_rows(self.path) if int(r["step"]) <= resume_step]

    def due(self, step: int) -> bool:
        return bool(self.sets) and bool(self.every) and step % self.every == 0

    def run(self, backbone: torch.nn.Module, step: int, epoch: float) -> dict[str, float]:
        """Evaluate every benchmark at ``step``; -> {"verify/<name>/accuracy": ..., ...}."""
        if not self.active:
            return {}
        logged = {}
        self.rows = [r for r in self.rows if int(r["step"]) != step]
        for name, images, issame in self.sets:
            res = evaluate_pairs(
                backbone, images, issame, batch_size=self.batch_size, device=self.device
            )
            self.rows.append(
                {
                    "step": step,
                    "epoch": f"{epoch:.4g}",
                    "benchmark": name,
                    "accuracy": f"{res['accuracy']:.6f}",
                    "std": f"{res['std']:.6f}",
                    "num_pairs": res["num_pairs"],
                }
            )
            logged[f"verify/{name}/accuracy"] = res["accuracy"]
            logged[f"verify/{name}/std"] = res["std"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())
        self.last_step = step
        return logged
