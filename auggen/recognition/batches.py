"""Batches for FR training: data checks and seeded per-step slices of an epoch, read from an
:class:`ImageSource` a batch at a time (in DataLoader workers, see ``auggen.data.loader``)."""

from __future__ import annotations

import numpy as np
import torch

from auggen.data.loader import read_batch
from auggen.data.source import ImageSource
from auggen.data.types import LabeledImages
from auggen.infra.runtime import per_rank_batch
from auggen.recognition.augment import augment_batch


def check_data(data: LabeledImages | ImageSource) -> None:
    """Labels in range and every class present; reads the labels only, never the pixels."""
    if len(data) == 0:
        raise ValueError("data holds no images")
    labels = data.labels
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= data.num_classes:
        raise ValueError(
            f"labels must lie in [0, num_classes={data.num_classes}), got [{lo}, {hi}]"
        )
    counts = torch.bincount(labels, minlength=data.num_classes)
    empty = (counts == 0).nonzero().squeeze(1).tolist()
    if empty:
        raise ValueError(
            f"{len(empty)} classes have no images (first: {empty[:10]}); every class in "
            f"[0, {data.num_classes}) needs at least one"
        )


def to_model_input(images_uint8: torch.Tensor) -> torch.Tensor:
    return (images_uint8.float() / 255.0 - 0.5) / 0.5


def seeded_generator(*key: int) -> torch.Generator:
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


class EpochBatches:
    """``batches(step)``: this rank's slice of the epoch permutation at ``step`` (0-based in the
    epoch), read at the input size and, with ``augment_here`` (inside DataLoader workers),
    normalised + augmented; otherwise uint8, augmented by the trainer on its device.

    The permutation is seeded by (seed, epoch) and cut into ``steps`` global batches of
    ``batch_size`` (global); rank r takes the r-th ``batch_size / world_size`` of each (the
    DistributedSampler layout), so ranks never share an image within an epoch and any
    world size trains on the same global batches.
    """

    def __init__(self, source: ImageSource, cfg, epoch: int, info, steps: int, augment_here):
        self.source, self.cfg, self.epoch = source, cfg, epoch
        self.rank, self.augment_here = info.rank, augment_here
        w = info.world_size
        b = per_rank_batch(cfg.batch_size, w)
        order = torch.randperm(len(source), generator=seeded_generator(cfg.seed, epoch, 1 << 30))
        # clone: keep this rank's slice only, not the whole permutation
        self.index = order[: steps * b * w].view(steps, w, b)[:, info.rank].clone()

    def __len__(self) -> int:
        return len(self.index)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.index[step]
        x = read_batch(self.source, idx, self.cfg.input_size)
        y = self.source.labels[idx]
        if self.augment_here:
            g = seeded_generator(self.cfg.seed, self.epoch, step, self.rank)
            x = augment_batch(to_model_input(x), self.cfg.augment, g)
        return x, y
