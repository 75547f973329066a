"""Inner-product nearest-neighbour search on L2-normalised features (FAISS, torch fallback).

A thin bridge in the spirit of faiss.contrib.torch_utils: ``IndexFlatIP`` (exact), on the
GPU when faiss was built with GPU support and a GPU is present, on the CPU otherwise, and a
torch matmul + top-k when faiss cannot be imported.
"""

from __future__ import annotations

import numpy as np
import torch

BACKENDS = ("auto", "faiss", "torch")


def load_faiss():
    """The faiss module, or None when it is not installed (the torch search stands in)."""
    try:
        import faiss  # optional: the nearest-neighbour extra; torch search otherwise
    except ImportError:
        return None
    return faiss


def faiss_available() -> bool:
    return load_faiss() is not None


def l2_normalize(x) -> torch.Tensor:
    """Rows scaled to unit L2 norm, as float32 (zero rows stay zero)."""
    x = torch.as_tensor(x).float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _faiss_search(faiss, queries: np.ndarray, database: np.ndarray, k: int, use_gpu: bool):
    index = faiss.IndexFlatIP(database.shape[1])
    if use_gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(database)
    return index.search(queries, k)


def search_inner_product(
    queries, database, k: int = 1, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` inner products of each query row against ``database`` rows.

    Inputs are (Q, D) and (N, D) tensors/arrays, normalise them first for cosine
    similarity. Returns (scores float32 (Q, k), indices int64 (Q, k)), best first.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    q = torch.as_tensor(queries).float()
    db = torch.as_tensor(database).float()
    if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
        raise ValueError(
            f"queries and database must be (Q, D) and (N, D), got {tuple(q.shape)} and "
            f"{tuple(db.shape)}"
        )
    if not 1 <= k <= len(db):
        raise ValueError(f"k must be in [1, {len(db)}] (database size), got {k}")
    faiss = load_faiss() if backend != "torch" else None
    if backend == "faiss" and faiss is None:
        raise ImportError("backend='faiss' but faiss is not installed (pip install faiss-cpu)")
    if faiss is not None:
        use_gpu = q.is_cuda or torch.cuda.is_available()
        qn = np.ascontiguousarray(q.detach().cpu().numpy())
        dn = np.ascontiguousarray(db.detach().cpu().numpy())
        scores, idx = _faiss_search(faiss, qn, dn, k, use_gpu)
        return torch.from_numpy(scores), torch.from_numpy(idx).long()
    scores, idx = (q @ db.to(q.device).T).topk(k, dim=1)
    return scores.cpu(), idx.cpu()


def class_centroids(feats, labels, num_classes: int | None = None) -> torch.Tensor:
    """L2-normalised mean of the L2-normalised features of each class: (num_classes, D)."""
    f = l2_normalize(feats)
    labels = torch.as_tensor(labels, dtype=torch.long)
    n = int(labels.max()) + 1 if num_classes is None else num_classes
    sums = torch.zeros(n, f.shape[1]).index_add_(0, labels, f)
    return l2_normalize(sums)
