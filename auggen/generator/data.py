"""The generator's per-step batches: seeded indices, flips, noise levels and noise, images
read from an :class:`ImageSource` and prepared to [-1, 1] a batch at a time.

Every step draws its global batch from a generator seeded by ``SeedSequence([seed, step])``
and each rank keeps its slice ``[rank * b, (rank + 1) * b)``: the ranks train on different
images, and any world size sees the same global batch (so n ranks equal one process).
Labels stay integers; the trainer one-hot encodes them per batch, on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from auggen.data.loader import read_batch
from auggen.data.source import ImageSource
from auggen.data.transforms import resize_images


def prepare_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 (N, 3, R, R) in [-1, 1] (x/127.5 - 1), antialiased resize."""
    return resize_images(images, resolution).to(torch.float32) / 127.5 - 1


def step_randomness(cfg, step: int, num_images: int, shape):
    """Global batch of one step: image indices, flips, noise levels and noise."""
    seed = int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0])
    g = torch.Generator().manual_seed(seed)
    b = cfg.batch_size
    idx = torch.randint(num_images, (b,), generator=g)
    flip = (torch.rand(b, generator=g) < 0.5) & cfg.xflip
    sigma = (torch.randn(b, 1, 1, 1, generator=g) * cfg.p_std + cfg.p_mean).exp()
    noise = torch.randn(b, *shape, generator=g)
    return seed, idx, flip, sigma, noise


class GenStepBatches:
    """``batch(step)``: this rank's slice of the step's batch, as a dict of CPU tensors
    (``y`` prepared images, flipped; ``labels`` int64; ``sigma``; ``noise``; ``seed``).

    Picklable, so DataLoader workers can call it (``auggen.data.loader.step_loader``).
    """

    def __init__(self, cfg, source: ImageSource, channels: int, rank: int, world: int):
        self.cfg, self.source = cfg, source
        self.shape = (channels, cfg.resolution, cfg.resolution)
        self.b = cfg.batch_size // world
        self.lo = rank * self.b

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        cfg, lo, hi = self.cfg, self.lo, self.lo + self.b
        seed, idx, flip, sigma, noise = step_randomness(cfg, step, len(self.source), self.shape)
        idx, flip = idx[lo:hi], flip[lo:hi]
        y = prepare_images(read_batch(self.source, idx, cfg.resolution), cfg.resolution)
        y = torch.where(flip[:, None, None, None], y.flip(-1), y)
        return dict(
            y=y,
            labels=self.source.labels[idx],
            # clones: a worker would otherwise ship the whole global batch's storage
            sigma=sigma[lo:hi].clone(),
            noise=noise[lo:hi].clone(),
            seed=torch.tensor(seed, dtype=torch.int64),
        )
