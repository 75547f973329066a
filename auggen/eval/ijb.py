"""IJB-B / IJB-C 1:1 template verification from the standard meta files.

Layout (as released): ``<root>/meta/<target>_face_tid_mid.txt`` with lines
"image_name template_id media_id", ``<root>/meta/<target>_template_pair_label.txt`` with lines
"template_1 template_2 label", and the images in ``<root>/<image_dir>/``. The release ships
loose crops plus landmarks; we take already aligned face crops from ``image_dir``.

Protocol: flip-fused unit image features; media pooling (mean of the features of one media
inside a template) then template pooling (mean of the media features, L2-normalised);
cosine score per template pair; TAR at FAR 1e-6 ... 1e-1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from auggen.data.image_codec import load_image_file
from auggen.eval.embeddings import extract_embeddings
from auggen.eval.roc import IJB_FARS, tar_at_far_table


def _read_columns(path: Path, ncols: int) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: IJB meta file not found")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            cols = line.split()
            if len(cols) < ncols:
                raise ValueError(f"{path}:{n}: expected {ncols} columns, got {line!r}")
            rows.append(cols[:ncols])
    if not rows:
        raise ValueError(f"{path}: empty")
    return rows


def read_ijb_meta(root, target: str = "IJBC") -> dict:
    """{"image_names", "templates", "medias", "pairs" (P, 2) int64, "labels" (P,) bool}."""
    meta = Path(root) / "meta"
    t = target.lower()
    faces = _read_columns(meta / f"{t}_face_tid_mid.txt", 3)
    pairs = _read_columns(meta / f"{t}_template_pair_label.txt", 3)
    return {
        "image_names": [r[0] for r in faces],
        "templates": np.array([int(r[1]) for r in faces], dtype=np.int64),
        "medias": np.array([int(r[2]) for r in faces], dtype=np.int64),
        "pairs": np.array([[int(r[0]), int(r[1])] for r in pairs], dtype=np.int64),
        "labels": np.array([int(r[2]) for r in pairs]) == 1,
    }


def template_features(feats: torch.Tensor, templates, medias) -> tuple[np.ndarray, torch.Tensor]:
    """Media then template pooling -> (sorted template ids (T,), unit features (T, D))."""
    templates, medias = np.asarray(templates), np.asarray(medias)
    feats = torch.as_tensor(feats).float()
    if not len(feats) == len(templates) == len(medias):
        raise ValueError(
            f"feats, templates, medias differ in length: {len(feats)}, {len(templates)}, "
            f"{len(medias)}"
        )
    uniq_t, t_idx = np.unique(templates, return_inverse=True)
    # One group per (template, media): the same media id may appear in several templates.
    groups, g_idx = np.unique(np.stack([t_idx, medias], 1), axis=0, return_inverse=True)
    g_idx = torch.from_numpy(g_idx.reshape(-1))
    media_sum = torch.zeros(len(groups), feats.shape[1]).index_add_(0, g_idx, feats)
    media_n = torch.bincount(g_idx, minlength=len(groups)).clamp_min(1)
    media_mean = media_sum / media_n[:, None]
    owner = torch.from_numpy(groups[:, 0])
    tmpl = torch.zeros(len(uniq_t), feats.shape[1]).index_add_(0, owner, media_mean)
    return uniq_t, F.normalize(tmpl, dim=1)  # the mean's direction = the sum's direction


def template_pair_scores(uniq_templates, template_feats, pairs) -> np.ndarray:
    """Cosine score for each (template_1, template_2) row of ``pairs``."""
    pairs = np.asarray(pairs)
    pos = np.searchsorted(uniq_templates, pairs)
    pos = np.clip(pos, 0, len(uniq_templates) - 1)
    missing = uniq_templates[pos] != pairs
    if missing.any():
        bad = pairs[missing][0]
        raise ValueError(f"pair list uses template {bad}, which has no images")
    a, b = torch.from_numpy(pos[:, 0]), torch.from_numpy(pos[:, 1])
    return (template_feats[a] * template_feats[b]).sum(1).numpy()


def evaluate_ijb(
    model: torch.nn.Module,
    root,
    target: str = "IJBC",
    image_dir: str = "loose_crop",
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    input_size: int = 112,
    fars=IJB_FARS,
    chunk: int = 4096,
    progress: bool = False,
) -> dict:
    """IJB 1:1 verification of ``model`` -> {"TAR@FAR=1e-4": ..., "num_pairs": ...}.

    Images are read ``chunk`` at a time (IJB-C has ~470k) and resized to ``input_size``.
    """
    meta = read_ijb_meta(root, target)
    folder = Path(root) / image_dir
    feats = []
    names = meta["image_names"]
    for start in range(0, len(names), chunk):
        imgs = torch.stack(
            [load_image_file(folder / n, input_size) for n in names[start : start + chunk]]
        )
        feats.append(extract_embeddings(model, imgs, batch_size, True, device, None, progress))
    uniq, tfeats = template_features(torch.cat(feats), meta["templates"], meta["medias"])
    scores = template_pair_scores(uniq, tfeats, meta["pairs"])
    out = tar_at_far_table(scores, meta["labels"], fars)
    out.update(num_pairs=len(scores), num_templates=len(uniq), num_images=len(names))
    return out
