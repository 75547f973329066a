"""Verification benchmarks end to end: model + image pairs -> accuracy, std, TAR@FAR."""

from __future__ import annotations

import numpy as np
import torch

from auggen.data.types import LabeledImages
from auggen.data.verification_bin import read_verification_bin
from auggen.eval.embeddings import extract_embeddings
from auggen.eval.roc import tar_at_far_table
from auggen.eval.verification import pair_scores, verification_folds

PAIR_FARS = (1e-3, 1e-2, 1e-1)


def score_summary(scores, issame, nfolds: int = 10, fars=PAIR_FARS) -> dict:
    """{"accuracy", "std", "fold_accuracies", "TAR@FAR=...", "num_pairs"} for cosine scores.

    Accuracy is insightface's 10-fold protocol on its distance grid, as published tables are.
    """
    folds = verification_folds(scores, issame, nfolds, thresholds="insightface")
    accs = folds["accuracies"]
    out = {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "fold_accuracies": accs}
    out.update(tar_at_far_table(scores, issame, fars))
    out["num_pairs"] = int(np.asarray(scores).shape[0])
    return out


def evaluate_pairs(
    model: torch.nn.Module,
    images: torch.Tensor,
    issame,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    nfolds: int = 10,
    flip: bool = True,
) -> dict:
    """Interleaved pairs (images[2i], images[2i+1]), as in the insightface .bin files."""
    feats = extract_embeddings(model, images, batch_size, flip, device, input_size)
    scores = (feats[0::2] * feats[1::2]).sum(1)
    return score_summary(scores, issame, nfolds)


def evaluate_bin(
    model: torch.nn.Module,
    path,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    input_size: int | None = 112,
    nfolds: int = 10,
) -> dict:
    """Evaluate on an insightface verification .bin (lfw.bin, cfp_fp.bin, agedb_30.bin, ...)."""
    images, issame = read_verification_bin(path)
    return evaluate_pairs(model, images, issame, batch_size, device, input_size, nfolds)


def evaluate_labeled_pairs(
    model: torch.nn.Module,
    data: LabeledImages,
    idx_a,
    idx_b,
    issame=None,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    nfolds: int = 10,
) -> dict:
    """Pairs of indices into ``data`` (e.g. from ``make_verification_pairs`` on unseen ORL
    identities): every image is embedded once; ``issame`` defaults to equal labels."""
    feats = extract_embeddings(model, data.images, batch_size, True, device, input_size)
    idx_a, idx_b = torch.as_tensor(idx_a), torch.as_tensor(idx_b)
    if issame is None:
        issame = data.labels[idx_a] == data.labels[idx_b]
    return score_summary(pair_scores(feats, idx_a, idx_b), issame, nfolds)
