"""Per-step batches for the trainers, made in DataLoader workers ahead of the training loop.

Both trainers describe a run as numbered steps whose batch is a pure function of
``(seed, step, rank)``: ``make(step)`` reads that step's images from an :class:`ImageSource`
(decoding on demand), prepares and augments them, and returns the tensors the step needs.
``step_loader`` runs ``make`` for ``start, start + 1, ...`` in ``num_workers`` processes (or
the main one for 0); items come back in step order, so prefetching never changes a result
and a run resumed at any step sees the same batches as the uninterrupted one.
"""

from __future__ import annotations

import torch

from auggen.data.source import ImageSource, as_source
from auggen.data.transforms import resize_images
from auggen.data.types import LabeledImages


def training_source(data: LabeledImages | ImageSource, size: int) -> ImageSource:
    """The trainers' view of ``data``: images already in memory are resized to ``size`` once
    (cheaper than per batch, and they are in memory anyway); an ImageSource is used as it is
    and its batches resized as they are read (``read_batch``)."""
    if isinstance(data, ImageSource):
        return data
    return as_source(data, size)


def read_batch(source: ImageSource, indices, size: int) -> torch.Tensor:
    """uint8 (B, C, size, size): ``source.read(indices)`` resized when the source differs."""
    x = source.read(indices)
    if tuple(x.shape[-2:]) != (size, size):
        x = resize_images(x, size)
    return x


class _StepItems(torch.utils.data.Dataset):
    def __init__(self, make, start: int, stop: int):
        self.make, self.start, self.stop = make, int(start), int(stop)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, k: int):
        return self.make(self.start + k)


def step_loader(make, start: int, stop: int, num_workers: int = 0, pin_memory: bool = False):
    """A DataLoader whose k-th item is ``make(start + k)``, for steps ``start .. stop - 1``.

    ``make`` must be picklable (a module-level class instance) when ``num_workers > 0``.
    """
    return torch.utils.data.DataLoader(
        _StepItems(make, start, stop),
        batch_size=None,  # each item is already a whole step's batch
        shuffle=False,
        num_workers=int(num_workers),
        pin_memory=pin_memory,
        # DataLoader draws its workers' base seed from this generator; a private one keeps it
        # off the global RNG (dropout), so where a run starts its loader changes nothing.
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
    )
