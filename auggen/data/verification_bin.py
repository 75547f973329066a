"""insightface verification .bin files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

A pickle of ``(bins, issame_list)``: 2N encoded images (``bytes`` or cv2.imencode uint8
arrays), pair i = (bins[2i], bins[2i+1]), and N bools. Old files are Python-2 pickles, read
with ``encoding="bytes"``. Loading goes through a restricted unpickler that only admits
numpy arrays and builtin containers, so a .bin file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from auggen.data.image_codec import decode_image, encode_image, stack_images
from auggen.infra.files import atomic_write_bytes

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("builtins", "bytearray"),
    ("builtins", "object"),
    ("__builtin__", "object"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"verification .bin may not reference {module}.{name}")


def read_verification_bin(path, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (images uint8 (2N, 3, H, W) RGB, issame bool (N,)); ``size`` resizes (square)."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            obj = _SafeUnpickler(f, encoding="bytes").load()
        except Exception as e:
            raise ValueError(f"{path}: not a verification .bin pickle ({e})") from e
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"{path}: expected a pickled (bins, issame_list) pair")
    bins, issame = obj
    issame = torch.as_tensor(np.asarray(issame, dtype=bool))
    if len(bins) != 2 * len(issame):
        raise ValueError(
            f"{path}: {len(bins)} images for {len(issame)} pairs (expected 2 per pair)"
        )
    images = [decode_image(b, f"{path}[{i}]", size) for i, b in enumerate(bins)]
    return stack_images(images, size, str(path)), issame


def write_verification_bin(
    path, images: torch.Tensor, issame, fmt: str = "jpeg", quality: int = 95
) -> Path:
    """Write 2N uint8 (3, H, W) images and N bools as an insightface .bin (atomic)."""
    issame = [bool(s) for s in np.asarray(issame).reshape(-1)]
    if images.ndim != 4 or len(images) != 2 * len(issame):
        raise ValueError(
            f"images must be (2N, 3, H, W) with N={len(issame)} pairs, got {tuple(images.shape)}"
        )
    bins = [encode_image(img, fmt, quality) for img in images]
    buf = io.BytesIO()
    pickle.dump((bins, issame), buf, protocol=4)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
