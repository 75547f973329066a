"""Encode / decode single images (PIL) to and from uint8 (3, H, W) RGB tensors."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageOps

from auggen.data.transforms import resize_images

FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}


# Largest value of a 16-bit sample; 65535 / 257 = 255 exactly, so v -> round(v / 257) maps
# the 16-bit range onto the 8-bit one the way an 8-bit encoder would have stored it.
_U16_MAX = 65535


def _deep_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """One-channel 16-bit, 32-bit int or float samples -> uint8 (H, W).

    PIL's ``convert("RGB")`` clips these to [0, 255], which turns an ordinary 16-bit PNG
    white. "I;16*": round(v / 257). "I" (32-bit int) has no declared range; Pillow opens
    16-bit PNG/TIFF as "I" in some versions, so values in [0, 65535] are read as 16-bit and
    anything outside raises (guessing a scale would give a silently wrong image). "F": taken
    as [0, 1] when its maximum is <= 1 (the usual float image convention), else as [0, 255]
    and clipped, like Pillow's own F -> L; NaN / inf raise.
    """
    if mode == "F":
        x = arr.astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError("float image holds NaN or inf")
        if x.size and x.max() <= 1.0:
            x = x * 255.0
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    x = arr.astype(np.int64)
    lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
    if lo < 0 or hi > _U16_MAX:
        raise ValueError(
            f"mode {mode} values span [{lo}, {hi}], outside the 16-bit range; scale unknown"
        )
    return ((x + 128) // 257).astype(np.uint8)  # == round(x / 257): 257 is odd, no ties


def image_to_rgb(img: Image.Image) -> np.ndarray:
    """An opened PIL image -> uint8 (H, W, 3) RGB, upright and correctly scaled.

    EXIF orientation is applied (cameras store portrait shots sideways and only tag them).
    Alpha ("RGBA", "LA", "PA", palette transparency) is dropped, not composited: the colour
    under it is kept as stored, which is what cv2.imread (the insightface pipeline) does.
    Deep one-channel modes go through ``_deep_to_uint8``; every other mode ("1", "L", "P",
    "CMYK", "YCbCr", ...) through PIL's own conversion to RGB.
    """
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        grey = _deep_to_uint8(np.asarray(img), mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "PA" or (mode == "P" and "transparency" in img.info):
        # Via RGBA: a direct P -> RGB with per-entry (bytes) transparency makes PIL warn;
        # the colours come out the same.
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGB"))


def decode_image(
    data: bytes | np.ndarray, what: str = "<bytes>", size: int | None = None
) -> torch.Tensor:
    """Encoded bytes (or a uint8 array of them, as cv2.imencode gives) -> uint8 (3, H, W) RGB.

    A standard decoder gives RGB even for insightface files: cv2.imencode takes BGR pixels
    and writes an ordinary JPEG. (PIL's libjpeg may differ from OpenCV's decode by a grey
    level here and there: IDCT and chroma upsampling are not bit-exact across decoders.)
    Any PIL mode is accepted; see ``image_to_rgb`` for orientation, alpha and 16-bit / float
    scaling. ``size`` resizes right away (square, see ``resize_images``),
    so large sets never hold every full-size image. Raises ValueError naming ``what`` on
    undecodable data.
    """
    if isinstance(data, np.ndarray):
        data = data.tobytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            arr = image_to_rgb(img)
    except Exception as e:  # PIL raises several types for corrupt data
        raise ValueError(f"{what}: cannot decode image ({type(e).__name__}: {e})") from e
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    return x if size is None else resize_images(x[None], size)[0]


def load_image_file(path, size: int | None = None) -> torch.Tensor:
    """Read and decode one image file -> uint8 (3, H, W) RGB; errors name the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e})") from e
    return decode_image(raw, str(path), size)


def encode_image(image: torch.Tensor, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """uint8 (3, H, W) RGB -> encoded bytes (JPEG at ``quality`` or lossless PNG)."""
    if fmt.lower() not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be uint8 (3, H, W), got {image.dtype} {tuple(image.shape)}")
    arr = image.expand(3, -1, -1).permute(1, 2, 0).contiguous().numpy()
    buf = io.BytesIO()
    kind = FORMATS[fmt.lower()]
    Image.fromarray(arr).save(buf, kind, **({"quality": quality} if kind == "JPEG" else {}))
    return buf.getvalue()


def stack_images(images: list[torch.Tensor], size: int | None, what: str) -> torch.Tensor:
    """Stack decoded images (already resized to ``size`` when that is given)."""
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise ValueError(
            f"{what}: images have different sizes {sorted(shapes)[:3]}...; pass size= to resize"
        )
    if not images:
        return torch.zeros((0, 3, size or 0, size or 0), dtype=torch.uint8)
    return torch.stack(images)
