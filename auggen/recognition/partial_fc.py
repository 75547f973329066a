"""Partial-FC class sampling: compute logits for a subset of classes when there are very many.

Each step keeps every class present in the batch (the positives) and fills up to
``ceil(rate * num_classes)`` columns with random other classes (An et al., "Partial FC",
ICCV-W 2021). The head is then called with ``classes`` and the labels remapped into it.
"""

from __future__ import annotations

import math

import torch


def sample_classes(
    labels: torch.Tensor, num_classes: int, rate: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(classes, local_labels)``: sorted kept class ids (K,) and labels indexing them.

    ``rate`` in (0, 1]; 1 keeps every class. Randomness comes from ``generator`` (CPU) only.
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    device = labels.device
    positives = torch.unique(labels.cpu())
    num_keep = max(math.ceil(rate * num_classes), len(positives))
    if num_keep >= num_classes:
        classes = torch.arange(num_classes)
    else:
        # Random scores, with positives forced to the top, pick the negatives uniformly.
        scores = torch.rand(num_classes, generator=generator)
        scores[positives] = 2.0
        classes = torch.topk(scores, num_keep).indices.sort().values
    local = torch.searchsorted(classes, labels.cpu())
    return classes.to(device), local.to(device)
