"""TensorBoard event files for the two trainers (optional: ``pip install tensorboard``).

One writer per run, on rank 0 only; every other rank (and a run with the option off) holds an
inactive log whose calls do nothing, so the training loops call it unconditionally. Events
go to ``<out_dir>/tensorboard/``. A resumed run purges the events past its checkpoint's step,
so TensorBoard shows one curve, not the killed attempt's tail on top of the resumed one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

INSTALL_HINT = "pip install tensorboard (or pip install 'auggen[tensorboard]')"


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``, or an ImportError that says what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard extra
    except ImportError as e:
        raise ImportError(
            f"tensorboard=True needs the tensorboard package, which is not installed: "
            f"{INSTALL_HINT}; or set tensorboard=False"
        ) from e
    return SummaryWriter


class TrainingLog:
    """Scalars and images of one training run; inactive unless ``enabled`` (rank 0, option on).

    ``required``: the option is on; every rank then checks that TensorBoard imports, so a
    missing package stops all ranks at start rather than only the writing one.
    """

    def __init__(
        self, log_dir: str | Path, required: bool, enabled: bool, resume_step: int | None = None
    ):
        self.writer = None
        if not required:
            return
        writer_class = summary_writer_class()
        if enabled:
            # purge_step: events at or after it (a killed attempt's tail) are hidden.
            self.writer = writer_class(str(log_dir), purge_step=resume_step or None)

    @property
    def active(self) -> bool:
        return self.writer is not None

    def scalars(self, step: int, values: dict[str, float | torch.Tensor | None]) -> None:
        if self.writer is None:
            return
        for tag, v in values.items():
            if v is not None:
                self.writer.add_scalar(tag, float(v), int(step))

    def image(self, tag: str, step: int, hwc_uint8: np.ndarray) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, hwc_uint8, int(step), dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@torch.no_grad()
def grad_norm(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The global L2 norm of the gradients (as clip_grad_norm_ computes it), no sync."""
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    if not norms:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(norms))
