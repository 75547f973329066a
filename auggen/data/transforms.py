"""Resizing of uint8 image batches (antialiased bilinear, optional square centre crop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def center_crop_square(images: torch.Tensor) -> torch.Tensor:
    """Crop (N, C, H, W) to the largest centred square (min(H, W) on each side)."""
    h, w = images.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return images[..., top : top + s, left : left + s]


def resize_images(
    images: torch.Tensor,
    size: int | tuple[int, int],
    center_crop: bool = True,
    chunk: int = 256,
) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) images to ``size`` and return uint8.

    ``size`` an int asks for square ``size x size`` output; a non-square input is then first
    centre-cropped to a square (``center_crop=True``, keeps the face's aspect ratio) or
    stretched (``center_crop=False``). ``size`` a pair ``(h, w)`` resizes without cropping.
    Bilinear with antialiasing (so downscaling averages instead of aliasing), rounded and
    clamped back to [0, 255]; work is done ``chunk`` images at a time to bound memory.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size must be a positive int, got {size}")
        if center_crop:
            images = center_crop_square(images)
        out_hw = (size, size)
    else:
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"size must be an int or a pair (h, w) of positive ints, got {size}")
        out_hw = (int(size[0]), int(size[1]))
    if tuple(images.shape[-2:]) == out_hw:
        return images.contiguous()
    if len(images) == 0:
        return images.new_zeros((0, images.shape[1], *out_hw))
    out = []
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].float()
        y = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=True)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)
