"""Evaluation protocols: embeddings, 10-fold verification, TAR@FAR, IJB templates, rank-1."""

from auggen.eval.embeddings import extract_embeddings, to_model_input
from auggen.eval.identification import nearest_neighbor, rank1_identification
from auggen.eval.metrics_io import read_metrics, write_metrics
from auggen.eval.roc import IJB_FARS, tar_at_far, tar_at_far_table, threshold_at_far
from auggen.eval.verification import (
    avg_h,
    kfold_slices,
    make_verification_pairs,
    pair_scores,
    verification_accuracy,
    verification_folds,
)

__all__ = [
    "IJB_FARS",
    "avg_h",
    "extract_embeddings",
    "kfold_slices",
    "make_verification_pairs",
    "nearest_neighbor",
    "pair_scores",
    "rank1_identification",
    "read_metrics",
    "tar_at_far",
    "tar_at_far_table",
    "threshold_at_far",
    "to_model_input",
    "verification_accuracy",
    "verification_folds",
    "write_metrics",
]
