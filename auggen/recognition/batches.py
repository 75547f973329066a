"""Batches for FR training: data checks, one-off resize, seeded per-step slices of an epoch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from auggen.data.types import LabeledImages
from auggen.recognition.augment import augment_batch


def check_data(data: LabeledImages) -> None:
    if len(data) == 0:
        raise ValueError("data holds no images")
    lo, hi = int(data.labels.min()), int(data.labels.max())
    if lo < 0 or hi >= data.num_classes:
        raise ValueError(
            f"labels must lie in [0, num_classes={data.num_classes}), got [{lo}, {hi}]"
        )
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    empty = (counts == 0).nonzero().squeeze(1).tolist()
    if empty:
        raise ValueError(
            f"{len(empty)} classes have no images (first: {empty[:10]}); every class in "
            f"[0, {data.num_classes}) needs at least one"
        )


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (N, 3, H, W) to (N, 3, size, size)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    out = [
        F.interpolate(c.float(), (size, size), mode="bilinear", antialias=True)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for c in images.split(chunk)
    ]
    return torch.cat(out)


def to_model_input(images_uint8: torch.Tensor) -> torch.Tensor:
    return (images_uint8.float() / 255.0 - 0.5) / 0.5


def seeded_generator(*key: int) -> torch.Generator:
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


class EpochBatches(torch.utils.data.Dataset):
    """Item ``step`` of an epoch: this rank's slice of the epoch permutation, optionally
    normalised + augmented (when run inside DataLoader workers)."""

    def __init__(self, images, labels, cfg, epoch, info, steps, augment_here):
        self.images, self.labels, self.cfg, self.epoch = images, labels, cfg, epoch
        self.info, self.steps, self.augment_here = info, steps, augment_here
        b, w = cfg.batch_size, info.world_size
        order = torch.randperm(len(images), generator=seeded_generator(cfg.seed, epoch, 1 << 30))
        self.index = order[: steps * b * w].view(steps, w, b)[:, info.rank]

    def __len__(self):
        return self.steps

    def __getitem__(self, step):
        idx = self.index[step]
        x, y = self.images[idx], self.labels[idx]
        if self.augment_here:
            g = seeded_generator(self.cfg.seed, self.epoch, step, self.info.rank)
            x = augment_batch(to_model_input(x), self.cfg.augment, g)
        return x, y
