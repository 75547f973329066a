"""A fixed grid of samples to watch the generator learn (``train_gen``'s ``samples/``).

Rows are classes spread evenly over the labels, columns are seeds; both are the same at
every step, so consecutive grids differ only by what the network learned. The sampler is
the project's Heun sampler with few steps: enough to see faces form, cheap next to training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from auggen.data.montage import montage, save_png
from auggen.generator.sample import sample, to_uint8

GRID_CLASSES = 8  # rows (fewer when the model has fewer classes)
GRID_SEEDS = 4  # columns
GRID_STEPS = 8  # Heun steps (15 denoiser calls)
GRID_SEED_BASE = 1_000_000  # far from the seeds the pipeline's stages draw with


def grid_labels(label_dim: int, rows: int = GRID_CLASSES) -> list[int]:
    """``rows`` class indices spread evenly over ``range(label_dim)``, first and last included."""
    if label_dim <= rows:
        return list(range(label_dim))
    return [round(k * (label_dim - 1) / (rows - 1)) for k in range(rows)]


def sample_grid(net, autocast: bool = False) -> np.ndarray:
    """HWC uint8 montage: one row per class of ``grid_labels``, one column per fixed seed."""
    labels = grid_labels(net.label_dim) if net.label_dim else [None]
    conds, seeds = [], []
    for r, c in enumerate(labels):
        cond = torch.zeros(net.label_dim)
        if c is not None:
            cond[c] = 1.0
        conds += [cond] * GRID_SEEDS
        seeds += [GRID_SEED_BASE + r * GRID_SEEDS + k for k in range(GRID_SEEDS)]
    x = sample(net, torch.stack(conds), seeds, num_steps=GRID_STEPS, autocast=autocast)
    images = to_uint8(x)
    return montage(
        [list(images[r * GRID_SEEDS : (r + 1) * GRID_SEEDS]) for r in range(len(labels))]
    )


def save_sample_grid(net, out_dir: Path, step: int, autocast: bool = False) -> np.ndarray:
    """Write ``out_dir/samples/step-XXXXXXX.png`` and return the montage."""
    grid = sample_grid(net, autocast)
    path = Path(out_dir) / "samples" / f"step-{step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(grid, path, scale=max(1, 64 // net.img_resolution))
    return grid
