"""AugGen's mixing metrics (DESIGN.md, "The mixing metrics"): consistency and distinctness.

For one source pair (i, j) and one (alpha, beta), ``F*`` holds the L2-normalised M_orig
embeddings of K images sampled from ``c* = alpha c_i + beta c_j``:
- m_s = mean pairwise cosine similarity inside F* (off-diagonal), higher = one identity;
- m_d = 1 - max(cos(mu*, mu_i), cos(mu*, mu_j)), mu = L2-normalised class centroids,
  higher = far from both sources, i.e. a new identity;
- m_total = m_s + m_d.
"""

from __future__ import annotations

import torch

from auggen.mixing.search import l2_normalize, search_inner_product


def consistency(new_feats) -> float:
    """m_s: mean cosine similarity over the K(K-1) ordered pairs of distinct rows."""
    f = l2_normalize(new_feats)
    k = len(f)
    if k < 2:
        raise ValueError(f"m_s needs at least 2 samples per condition, got {k}")
    sim = f @ f.T
    return float((sim.sum() - sim.diagonal().sum()) / (k * (k - 1)))


def distinctness(new_feats, src_i_feats, src_j_feats, backend: str = "auto") -> float:
    """m_d: one minus the cosine of the new centroid to the closer source centroid."""
    mu_new = l2_normalize(l2_normalize(new_feats).mean(0, keepdim=True))
    mu_src = torch.cat(
        [
            l2_normalize(l2_normalize(src_i_feats).mean(0, keepdim=True)),
            l2_normalize(l2_normalize(src_j_feats).mean(0, keepdim=True)),
        ]
    )
    best, _ = search_inner_product(mu_new, mu_src, k=1, backend=backend)
    return float(1.0 - best[0, 0])


def mixing_scores(new_feats, src_i_feats, src_j_feats, backend: str = "auto"):
    """(m_s, m_d) for the samples of one mixed condition, see the module docstring.

    ``new_feats`` (K, D) with K >= 2; ``src_*_feats`` (n, D) real features of the sources
    (any norm: every input is L2-normalised here).
    """
    for name, x in (("new_feats", new_feats), ("src_i_feats", src_i_feats)):
        if torch.as_tensor(x).ndim != 2:
            raise ValueError(f"{name} must be (n, D), got shape {tuple(torch.as_tensor(x).shape)}")
    if len(src_i_feats) == 0 or len(src_j_feats) == 0:
        raise ValueError("src_i_feats and src_j_feats need at least one real feature each")
    return consistency(new_feats), distinctness(new_feats, src_i_feats, src_j_feats, backend)
