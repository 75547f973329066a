"""1:N identification rank-1 (TinyFace style): probes vs gallery (optionally plus distractors).

Search goes through FAISS (``IndexFlatIP`` on L2-normalised features, i.e. cosine); without
faiss, or for features already on a GPU, a chunked torch matmul + argmax gives the same
neighbours.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from auggen.data.tinyface import read_tinyface
from auggen.eval.embeddings import extract_embeddings

DISTRACTOR_LABEL = -1


def _feats(x, device=None) -> torch.Tensor:
    x = torch.as_tensor(x, device=device).float()
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(x.shape)}")
    return F.normalize(x, dim=1)


def nearest_neighbor(queries, database, backend: str = "auto", chunk: int = 4096):
    """Index (int64 (Q,)) of each query's most cosine-similar database row."""
    db = _feats(database)
    q = _feats(queries, db.device)
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"queries have D={q.shape[1]} but database has D={db.shape[1]}")
    if len(db) == 0:
        raise ValueError("database is empty")
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"backend must be 'auto', 'faiss' or 'torch', got {backend!r}")
    if backend == "faiss" or (backend == "auto" and db.device.type == "cpu"):
        try:
            import faiss  # optional: the nearest-neighbour extra; torch search otherwise
        except ImportError:
            if backend == "faiss":
                raise ImportError("backend='faiss' needs faiss: pip install faiss-cpu") from None
        else:
            index = faiss.IndexFlatIP(db.shape[1])
            index.add(np.ascontiguousarray(db.cpu().numpy(), dtype=np.float32))
            _, idx = index.search(np.ascontiguousarray(q.cpu().numpy(), dtype=np.float32), 1)
            return torch.from_numpy(idx[:, 0].astype(np.int64))
    out = [(q[s : s + chunk] @ db.T).argmax(1).cpu() for s in range(0, len(q), chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def rank1_identification(
    probe_feats,
    probe_labels,
    gallery_feats,
    gallery_labels,
    distractor_feats=None,
    backend: str = "auto",
) -> float:
    """Fraction of probes whose nearest gallery image has the probe's label.

    ``distractor_feats`` are appended to the gallery with a label no probe has, so a probe
    matched to a distractor counts as a miss.
    """
    probe_labels = torch.as_tensor(probe_labels).long().cpu()
    gallery_labels = torch.as_tensor(gallery_labels).long().cpu()
    gallery = torch.as_tensor(gallery_feats).float()
    if len(probe_labels) != len(probe_feats) or len(gallery_labels) != len(gallery):
        raise ValueError(
            f"features and labels differ in length: probes {len(probe_feats)} vs "
            f"{len(probe_labels)}, gallery {len(gallery)} vs {len(gallery_labels)}"
        )
    if len(probe_labels) == 0:
        raise ValueError("no probes: rank-1 is undefined")
    if distractor_feats is not None:
        distractors = torch.as_tensor(distractor_feats, device=gallery.device).float()
        fill = torch.full((len(distractors),), DISTRACTOR_LABEL, dtype=torch.long)
        if (probe_labels == DISTRACTOR_LABEL).any():
            raise ValueError(f"probe_labels must not use {DISTRACTOR_LABEL} (distractor label)")
        gallery = torch.cat([gallery, distractors])
        gallery_labels = torch.cat([gallery_labels, fill])
    nn_idx = nearest_neighbor(probe_feats, gallery, backend)
    return float((gallery_labels[nn_idx] == probe_labels).float().mean())


def evaluate_identification(
    model: torch.nn.Module,
    probe,
    gallery,
    distractor_images: torch.Tensor | None = None,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    backend: str = "auto",
) -> dict:
    """Rank-1 of ``model`` with LabeledImages probe / gallery (+ uint8 distractor images)."""

    def embed(images):
        return extract_embeddings(model, images, batch_size, True, device, input_size)

    distractors = None if distractor_images is None else embed(distractor_images)
    rank1 = rank1_identification(
        embed(probe.images),
        probe.labels,
        embed(gallery.images),
        gallery.labels,
        distractors,
        backend,
    )
    return {
        "rank1": rank1,
        "num_probes": len(probe),
        "num_gallery": len(gallery) + (0 if distractors is None else len(distractors)),
    }


def evaluate_tinyface(
    model: torch.nn.Module,
    root,
    input_size: int = 112,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    backend: str = "auto",
) -> dict:
    """Rank-1 on a TinyFace-style folder (see ``auggen.data.tinyface``): gallery = Gallery_Match
    plus Gallery_Distractor."""

    splits = read_tinyface(root, size=input_size)
    distractors = splits["distractor"].images if "distractor" in splits else None
    return evaluate_identification(
        model, splits["probe"], splits["gallery"], distractors, batch_size, device, None, backend
    )
