"""Flip-fused, L2-normalised embeddings of uint8 face images (the insightface test protocol)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from auggen.data.transforms import resize_images


def to_model_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [-1, 1]: (x / 255 - 0.5) / 0.5."""
    return (images_uint8.float() / 255.0 - 0.5) / 0.5


def _first(out):
    # AdaFace-style backbones return (embedding, norm); insightface ones a tensor.
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def extract_embeddings(
    model: torch.nn.Module,
    images_uint8: torch.Tensor,
    batch_size: int = 128,
    flip: bool = True,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Embed uint8 (N, 3, H, W) images -> float32 (N, D) on the CPU, rows of unit norm.

    Batched, no grad, the model in eval mode (its previous mode is restored after) and moved
    to ``device``. ``input_size`` resizes each batch first (antialiased; non-square images are
    centre-cropped, see ``resize_images``). With ``flip`` the embedding is the sum of the
    embeddings of the image and its horizontal mirror, normalised after the sum.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
        raise ValueError(
            f"images_uint8 must be uint8 (N, C, H, W), got {images_uint8.dtype} "
            f"{tuple(images_uint8.shape)}"
        )
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = model.training
    model.eval().to(device)
    feats = []
    try:
        starts = range(0, len(images_uint8), batch_size)
        for start in tqdm(starts, desc="embed", disable=not progress, leave=False):
            batch = images_uint8[start : start + batch_size]
            if input_size is not None:
                batch = resize_images(batch, int(input_size))
            x = to_model_input(batch.to(device))
            emb = _first(model(x)).float()
            if flip:
                emb = emb + _first(model(x.flip(-1))).float()
            feats.append(emb.cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("images_uint8 is empty: nothing to embed")
    return F.normalize(torch.cat(feats), dim=1)
