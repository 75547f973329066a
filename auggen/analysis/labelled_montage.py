"""A montage of image rows with a label beside each row and a title above each column."""

from __future__ import annotations

from pathlib import Path

import torch

from auggen.analysis.figures import pyplot, save_figure
from auggen.data.montage import montage

PAD = 2  # px between images, as in ``montage``


def save_labelled_montage(
    rows: list[list[torch.Tensor]],
    row_labels: list[str],
    col_labels: list[str],
    path: str | Path,
    inches_per_image: float = 0.9,
) -> None:
    """``rows`` of uint8 (3, H, W) images as one PNG; ``row_labels[i]`` left of row i,
    ``col_labels[j]`` above column j (matplotlib text, so α and β render)."""
    if len(row_labels) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(row_labels)} row labels")
    grid = montage(rows, PAD)
    h = max(img.shape[1] for r in rows for img in r)
    w = max(img.shape[2] for r in rows for img in r)
    cols = max(len(r) for r in rows)
    plt = pyplot()
    fig, ax = plt.subplots(
        figsize=(1.6 + inches_per_image * cols, 0.5 + inches_per_image * len(rows))
    )
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([PAD + i * (h + PAD) + h / 2 for i in range(len(rows))], row_labels, fontsize=8)
    ax.set_xticks([PAD + j * (w + PAD) + w / 2 for j in range(len(col_labels))])
    ax.set_xticklabels(col_labels, fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
