"""Encode / decode single images (PIL) to and from uint8 (3, H, W) RGB tensors."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from auggen.data.transforms import resize_images

FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}


def decode_image(
    data: bytes | np.ndarray, what: str = "<bytes>", size: int | None = None
) -> torch.Tensor:
    """Encoded bytes (or a uint8 array of them, as cv2.imencode gives) -> uint8 (3, H, W) RGB.

    A standard decoder gives RGB even for insightface files: cv2.imencode takes BGR pixels
    and writes an ordinary JPEG. (PIL's libjpeg may differ from OpenCV's decode by a grey
    level here and there: IDCT and chroma upsampling are not bit-exact across decoders.)
    ``size`` resizes right away (square, see ``resize_images``),
    so large sets never hold every full-size image. Raises ValueError naming ``what`` on
    undecodable data.
    """
    if isinstance(data, np.ndarray):
        data = data.tobytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert("RGB"))
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
