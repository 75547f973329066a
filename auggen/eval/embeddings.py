"""Flip-fused, L2-normalised embeddings of uint8 face images (the insightface test protocol)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from auggen.data.transforms import resize_images
from auggen.infra import runtime


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


def iter_embeddings(embed, src, batch: int, indices=None, workers: int = 0):
    """Yields (start, float32 (B, D) CPU tensor) over the images of ``src`` at ``indices``
    (default: all, in order), ``batch`` images per ``embed`` call (uint8 (B, 3, S, S) ->
    (B, D)). ``workers`` > 0: ``workers`` threads decode the next batch while this one is
    embedded (PIL decodes without the GIL); 0: each batch is read right before its call."""
    idx = np.arange(len(src), dtype=np.int64) if indices is None else np.asarray(indices)
    starts = range(0, len(idx), max(1, batch))
    if workers <= 0:
        for lo in starts:
            yield lo, torch.as_tensor(embed(src.read(idx[lo : lo + batch]))).float().cpu()
        return
    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as ahead:

        def decode(lo: int) -> torch.Tensor:
            return torch.stack(list(pool.map(src.read_one, idx[lo : lo + batch].tolist())))

        pending = ahead.submit(decode, 0) if len(idx) else None
        for lo in starts:
            images = pending.result()
            if lo + batch < len(idx):
                pending = ahead.submit(decode, lo + batch)
            yield lo, torch.as_tensor(embed(images)).float().cpu()


def embed_source(
    embed, src, batch: int = 1024, indices=None, workers: int = 0, split: bool = False,
    out=None, progress: bool = False,
):  # fmt: skip
    """(N, D) embeddings of the images of ``src`` at ``indices`` (default: all), in order:
    the one way a whole set is embedded (grid, generate, evaluate, report, ``auggen embed``).

    ``out``: an (N, D) array to fill (e.g. a memory-mapped .npy, so a large set never sits
    in memory), returned; otherwise a float32 tensor. ``split``: every rank of a torchrun
    job calls this, each embeds its own contiguous block and all receive the whole table.
    """
    rt = runtime.current()
    n = len(src) if indices is None else len(indices)
    idx = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices)
    block = runtime.my_block(n, rt) if split else range(n)
    mine, width = None, None
    with tqdm(total=len(block), unit="img", desc="embed", disable=not progress) as bar:
        for lo, f in iter_embeddings(embed, src, batch, idx[block.start : block.stop], workers):
            if mine is None:  # D is known from the first batch: one allocation, no concat
                width = f.shape[1]
                mine = out if out is not None and not split else torch.empty(len(block), width)
            mine[lo : lo + len(f)] = f.numpy() if isinstance(mine, np.ndarray) else f
            bar.update(len(f))
    if not (split and rt.enabled):
        if mine is None:
            return out if out is not None else torch.empty(0)
        return mine
    if mine is None:  # a rank with no images still takes part, with the right row width
        width = embed(src.read(idx[:1])).shape[1] if n else 0
        mine = torch.empty(0, width)
    return runtime.gather_rows(mine.float(), "embeddings of every rank's block", rt)
