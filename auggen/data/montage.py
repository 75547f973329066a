"""Image grids: uint8 (3, H, W) tiles -> one HWC array, and that array as a PNG (atomic)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from auggen.infra.files import atomic_path


def montage(rows: list[list[torch.Tensor]], pad: int = 2) -> np.ndarray:
    """A grid of uint8 (3, H, W) images (rows may differ in length) -> HWC uint8 array."""
    h = max(img.shape[1] for r in rows for img in r)
    w = max(img.shape[2] for r in rows for img in r)
    cols = max(len(r) for r in rows)
    out = np.full(((h + pad) * len(rows) + pad, (w + pad) * cols + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            a = img.permute(1, 2, 0).numpy()
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + a.shape[0], x : x + a.shape[1]] = a
    return out


def save_png(array: np.ndarray, path, scale: int = 1) -> None:
    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
