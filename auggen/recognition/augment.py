"""Batch augmentations for FR training, in plain torch (no torchvision), seeded.

The AdaFace/AugGen recipe: horizontal flip, random resized crop, low-resolution simulation
(downscale by a random factor, then back up) and photometric jitter (brightness, contrast,
saturation), each applied to a sample with its own probability.

Inputs and outputs are float (N, 3, H, W) in [-1, 1]. All random numbers are drawn on the CPU
from the given generator, a fixed count per call, so a seed gives the same augmentation on any
device and whatever the switches are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CROP_MODES = ("resize", "paste")
_CROP_TRIES = 10
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL / torchvision grayscale


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    crop_prob: float = 0.2
    crop_scale: tuple[float, float] = (0.2, 1.0)  # area fraction of the crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio w/h of the crop
    crop_mode: str = "resize"  # "resize": crop then resize back; "paste": black outside the box
    lowres_prob: float = 0.2
    lowres_scale: tuple[float, float] = (0.2, 1.0)  # side ratio of the low-resolution image
    photometric_prob: float = 0.2
    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5

    def __post_init__(self):
        for name in ("crop_prob", "lowres_prob", "photometric_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}")
        for name in ("crop_scale", "crop_ratio", "lowres_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise ValueError(f"{name} must be (lo, hi) with 0 < lo <= hi, got {(lo, hi)}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def active(self) -> bool:
        return self.flip or self.crop_prob > 0 or self.lowres_prob > 0 or self.photometric_prob > 0


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def crop_boxes(n: int, h: int, w: int, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """(n, 4) float boxes (top, left, height, width) in pixels, torchvision's RandomResizedCrop
    rule: up to 10 tries of (area, log-ratio), first that fits wins, else the whole image."""
    area = h * w * _uniform(n * _CROP_TRIES, *cfg.crop_scale, g).view(n, _CROP_TRIES)
    log_r = _uniform(n * _CROP_TRIES, *map(math.log, cfg.crop_ratio), g).view(n, _CROP_TRIES)
    ch = torch.sqrt(area / torch.exp(log_r)).round()
    cw = torch.sqrt(area * torch.exp(log_r)).round()
    ok = (ch >= 1) & (cw >= 1) & (ch <= h) & (cw <= w)
    first = torch.where(ok.any(1), ok.double().argmax(1), -1)
    pick = first.clamp(min=0).unsqueeze(1)
    ch = torch.where(first >= 0, ch.gather(1, pick).squeeze(1), float(h))
    cw = torch.where(first >= 0, cw.gather(1, pick).squeeze(1), float(w))
    top = (torch.rand(n, generator=g, dtype=torch.float64) * (h - ch + 1)).floor()
    left = (torch.rand(n, generator=g, dtype=torch.float64) * (w - cw + 1)).floor()
    return torch.stack([top, left, ch, cw], 1)


def _resized_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left, ch, cw = boxes.T
    # Affine map from output grid [-1, 1] to the box in input coordinates (align_corners=False).
    theta = torch.zeros(len(x), 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cw / w
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    # Clamp to the box's outer pixel centres: the same as cropping, then resizing the crop.
    lo = torch.stack([(2 * left + 1) / w - 1, (2 * top + 1) / h - 1], 1)
    hi = torch.stack([(2 * (left + cw) - 1) / w - 1, (2 * (top + ch) - 1) / h - 1], 1)
    lo, hi = (t.to(x.device, x.dtype).view(-1, 1, 1, 2) for t in (lo, hi))
    grid = torch.maximum(torch.minimum(grid, hi), lo)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _pasted_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left, ch, cw = (b.to(x.device).view(-1, 1) for b in boxes.T)
    rows = torch.arange(h, device=x.device).view(1, -1)
    cols = torch.arange(w, device=x.device).view(1, -1)
    keep_r = (rows >= top) & (rows < top + ch)
    keep_c = (cols >= left) & (cols < left + cw)
    keep = (keep_r.unsqueeze(2) & keep_c.unsqueeze(1)).unsqueeze(1)
    return torch.where(keep, x, torch.full_like(x, -1.0))


def _low_resolution(x: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
    """Downscale each image to its side (antialiased bilinear), then back up (bilinear)."""
    out = x.clone()
    size = tuple(x.shape[-2:])
    for side in sides.unique().tolist():
        idx = (sides == side).nonzero().squeeze(1).to(x.device)
        small_hw = (max(2, round(side * size[0] / size[1])), side)
        small = F.interpolate(
            x[idx], small_hw, mode="bilinear", antialias=True, align_corners=False
        )
        out[idx] = F.interpolate(small, size, mode="bilinear", align_corners=False)
    return out


def _photometric(x01: torch.Tensor, b: torch.Tensor, c: torch.Tensor, s: torch.Tensor):
    """Brightness, contrast, saturation on [0, 1] images; factors (N,) with 1 = no change."""
    view = (-1, 1, 1, 1)
    gray_w = torch.tensor(_GRAY, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    x01 = (x01 * b.view(view)).clamp(0, 1)
    mean = (x01 * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x01 = ((x01 - mean) * c.view(view) + mean).clamp(0, 1)
    gray = (x01 * gray_w).sum(1, keepdim=True)
    return ((x01 - gray) * s.view(view) + gray).clamp(0, 1)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment a float (N, 3, H, W) batch in [-1, 1]; returns a new tensor, same shape/range."""
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"x must be float (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")
    n, _, h, w = x.shape
    g = generator
    # Fixed draw order and count, whatever is switched on.
    flip = torch.rand(n, generator=g) < (0.5 if cfg.flip else 0.0)
    do_crop = torch.rand(n, generator=g) < cfg.crop_prob
    boxes = crop_boxes(n, h, w, cfg, g)
    do_low = torch.rand(n, generator=g) < cfg.lowres_prob
    low_ratio = _uniform(n, *cfg.lowres_scale, g)
    do_photo = torch.rand(n, generator=g) < cfg.photometric_prob
    jitter = torch.rand(3, n, generator=g, dtype=torch.float64) * 2 - 1

    dev = x.device
    x = torch.where(flip.to(dev).view(-1, 1, 1, 1), x.flip(-1), x)
    if do_crop.any():
        idx = do_crop.nonzero().squeeze(1)
        crop = _resized_crop if cfg.crop_mode == "resize" else _pasted_crop
        x = x.clone()
        x[idx.to(dev)] = crop(x[idx.to(dev)], boxes[idx])
    if do_low.any():
        idx = do_low.nonzero().squeeze(1)
        sides = (low_ratio[idx] * w).floor().clamp(2, w).long()
        x = x.clone()
        x[idx.to(dev)] = _low_resolution(x[idx.to(dev)], sides)
    if do_photo.any():
        idx = do_photo.nonzero().squeeze(1)
        amounts = torch.tensor([cfg.brightness, cfg.contrast, cfg.saturation], dtype=torch.float64)
        b, c, s = (1 + amounts.view(3, 1) * jitter[:, idx]).to(dev, x.dtype)
        x = x.clone()
        x[idx.to(dev)] = _photometric((x[idx.to(dev)] + 1) / 2, b, c, s) * 2 - 1
    return x
