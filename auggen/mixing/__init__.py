"""Condition mixing and the AugGen grid search: ``c* = alpha c_i + beta c_j``, m_s, m_d."""

from auggen.mixing.conditions import (
    MAX_COEF,
    dirichlet_mix,
    mix_conditions,
    one_hot,
    sample_pairs,
)
from auggen.mixing.grid import PAPER_GRID, GridConfig, GridResult, grid_search
from auggen.mixing.grid_outputs import (
    best_cell,
    plot_heatmaps,
    read_grid_csv,
    write_best,
    write_grid_csv,
)
from auggen.mixing.metrics import consistency, distinctness, mixing_scores
from auggen.mixing.search import class_centroids, l2_normalize, search_inner_product

__all__ = [
    "MAX_COEF",
    "PAPER_GRID",
    "GridConfig",
    "GridResult",
    "best_cell",
    "class_centroids",
    "consistency",
    "dirichlet_mix",
    "distinctness",
    "grid_search",
    "l2_normalize",
    "mix_conditions",
    "mixing_scores",
    "one_hot",
    "plot_heatmaps",
    "read_grid_csv",
    "sample_pairs",
    "search_inner_product",
    "write_best",
    "write_grid_csv",
]
