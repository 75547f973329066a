"""Evaluation protocols: embeddings, 10-fold verification, TAR@FAR, IJB templates, rank-1."""

from auggen.eval.embeddings import extract_embeddings, to_model_input
from auggen.eval.identification import (
    evaluate_identification,
    evaluate_tinyface,
    nearest_neighbor,
    rank1_identification,
)
from auggen.eval.ijb import evaluate_ijb, read_ijb_meta, template_features, template_pair_scores
from auggen.eval.metrics_io import read_metrics, write_metrics
from auggen.eval.pair_eval import (
    evaluate_bin,
    evaluate_labeled_pairs,
    evaluate_pairs,
    score_summary,
)
from auggen.eval.paired import PairedDifference, paired_difference, t_quantile
from auggen.eval.roc import IJB_FARS, tar_at_far, tar_at_far_table, threshold_at_far
from auggen.eval.verification import (
    INSIGHTFACE_DISTANCE_GRID,
    avg_h,
    best_threshold,
    cosine_to_distance,
    kfold_slices,
    make_verification_pairs,
    pair_scores,
    verification_accuracy,
    verification_folds,
)

__all__ = [
    "IJB_FARS",
    "INSIGHTFACE_DISTANCE_GRID",
    "PairedDifference",
    "avg_h",
    "best_threshold",
    "cosine_to_distance",
    "evaluate_bin",
    "evaluate_identification",
    "evaluate_ijb",
    "evaluate_labeled_pairs",
    "evaluate_pairs",
    "evaluate_tinyface",
    "extract_embeddings",
    "kfold_slices",
    "make_verification_pairs",
    "nearest_neighbor",
    "pair_scores",
    "paired_difference",
    "rank1_identification",
    "read_ijb_meta",
    "read_metrics",
    "score_summary",
    "t_quantile",
    "tar_at_far",
    "tar_at_far_table",
    "template_features",
    "template_pair_scores",
    "threshold_at_far",
    "to_model_input",
    "verification_accuracy",
    "verification_folds",
    "write_metrics",
]
