"""In-memory labelled image set: the currency between data, generator and recognition."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LabeledImages:
    """``images``: uint8 (N, 3, H, W) RGB; ``labels``: int64 (N,) in [0, num_classes).

    ``names`` optionally records where each image came from (a path, or a key).
    ``report`` carries loader notes, e.g. ``{"skipped": [(path, reason), ...]}`` when a
    reader was asked to skip unreadable files, ``{"repaired": [...]}`` for ORL.
    """

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str] = field(default_factory=list)
    num_classes: int | None = None
    report: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise ValueError(
                f"labels must be (N,) with N={len(self.images)}, got {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.long()
        if self.num_classes is None:
            self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor) -> LabeledImages:
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        names = [self.names[i] for i in index.tolist()] if self.names else []
        return LabeledImages(
            self.images[index], self.labels[index], names, self.num_classes, dict(self.report)
        )
