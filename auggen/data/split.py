"""The identity split of a labelled dataset: which identities train, which stay unseen
(verification pairs and identification only), and which images of each training identity are
held out as rank-1 probes. Pure functions of labels and a ``DataConfig``-like object (fields
``max_identities``, ``min_images_per_identity``, ``drop_small_identities``,
``unseen_identities``, ``unseen_auto``); the data stage applies them.
"""

from __future__ import annotations

import torch


def check_identities(labels: torch.Tensor, num_classes: int, d, name) -> list[int]:
    """Classes kept after the size checks; raises on one-image identities unless dropped."""
    counts = torch.bincount(labels, minlength=num_classes)
    present = [c for c in range(num_classes) if counts[c] > 0]
    if d.max_identities:
        present = present[: d.max_identities]
    small = [c for c in present if counts[c] < d.min_images_per_identity]
    if small and not d.drop_small_identities:
        raise ValueError(
            f"identity {name(small[0])} has {int(counts[small[0]])} image(s), fewer than "
            f"data.min_images_per_identity={d.min_images_per_identity} ({len(small)} such "
            "identities); set data.drop_small_identities=true to drop them"
        )
    return [c for c in present if c not in set(small)]


def proportional_unseen(identities: int) -> int:
    """The small-data split: a quarter of the identities unseen, at least 2 unseen and 2
    trained; below 4 identities none (no unseen benchmarks)."""
    return max(2, identities // 4) if identities >= 4 else 0


def choose_unseen(identities: int, d) -> tuple[int, str]:
    """(unseen identities, a note when the proportional split replaced the configured one).

    ``data.unseen_identities`` stands unless it leaves fewer than two training identities;
    then ``data.unseen_auto`` takes the proportional split, and without it the error names
    the ``--set`` line that would work."""
    if identities - d.unseen_identities >= 2:
        return d.unseen_identities, ""
    if identities < 2:
        raise ValueError(f"need at least two training identities, got {identities} in all")
    fit = proportional_unseen(identities)
    if not d.unseen_auto:
        raise ValueError(
            f"need at least two training identities: data.unseen_identities="
            f"{d.unseen_identities} leaves {max(identities - d.unseen_identities, 0)} of the "
            f"{identities} identities; --set data.unseen_identities={fit} would work "
            f"(any value from 0 to {identities - 2} except 1)"
        )
    return fit, (
        f"data.unseen_identities={d.unseen_identities} would leave "
        f"{max(identities - d.unseen_identities, 0)} of the {identities} identities for "
        f"training; using the small-data split instead: {fit} unseen, {identities - fit} "
        f"trained (--set data.unseen_identities=N to choose)"
    )


def relabel(labels: torch.Tensor, keep: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of the images of classes ``keep``, their labels renumbered 0..len(keep)-1)."""
    lut = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    lut[torch.tensor(keep, dtype=torch.long)] = torch.arange(len(keep))
    new = lut[labels]
    idx = (new >= 0).nonzero().flatten()
    return idx, new[idx]


def split_heldout(labels: torch.Tensor, num_classes: int, per_id: int, seed: int):
    """(train positions, held-out positions): ``per_id`` random images of every identity."""
    g = torch.Generator().manual_seed(seed)
    hold = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        if per_id and len(idx) <= per_id:
            raise ValueError(
                f"identity {c} has {len(idx)} images; holding out data.heldout_per_identity="
                f"{per_id} needs at least {per_id + 1} (lower it, or drop small identities)"
            )
        hold.append(idx[torch.randperm(len(idx), generator=g)[:per_id]])
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[torch.cat(hold)] = True
    return (~mask).nonzero().flatten(), mask.nonzero().flatten()


def available_pairs(labels: torch.Tensor) -> tuple[int, int]:
    """(genuine, impostor): the distinct image pairs a label vector allows."""
    counts = torch.bincount(labels).long()
    genuine = int((counts * (counts - 1) // 2).sum())
    n = len(labels)
    return genuine, n * (n - 1) // 2 - genuine
