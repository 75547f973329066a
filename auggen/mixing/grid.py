"""Grid search over (alpha, beta): sample mixed identities, score them, pick the best.

For every alpha row, all (beta, pair, sample) conditions go through the sampler as one
large batch of condition rows. Sample k of pair p uses the same noise seed in every cell
(common random numbers), so cells differ by (alpha, beta) and not by noise. The finished
rows are saved after each alpha (atomic JSON), so an interrupted search resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from auggen.files import load_bundle, read_json, save_bundle
from auggen.mixing.conditions import MAX_COEF, mix_conditions, sample_pairs
from auggen.mixing.metrics import mixing_scores
from auggen.mixing.search import l2_normalize

PAPER_GRID = tuple(round(0.1 * k, 1) for k in range(1, 12))  # 0.1 ... 1.1


@dataclass(frozen=True)
class GridConfig:
    alphas: tuple[float, ...] = PAPER_GRID
    betas: tuple[float, ...] = PAPER_GRID
    pairs: int = 8  # P random pairs of distinct classes
    samples_per_cell: int = 8  # K images per (pair, alpha, beta)
    seed: int = 0
    max_coef: float = MAX_COEF
    backend: str = "auto"  # similarity search: auto | faiss | torch

    def validate(self, num_classes: int | None = None) -> None:
        for name, values in (("alphas", self.alphas), ("betas", self.betas)):
            if not values:
                raise ValueError(f"grid.{name} must not be empty")
            for v in values:
                if not 0.0 <= float(v) <= self.max_coef:
                    raise ValueError(f"grid.{name} must be in [0, {self.max_coef:g}], got {v}")
        if self.samples_per_cell < 2:
            raise ValueError(f"grid.samples_per_cell must be >= 2, got {self.samples_per_cell}")
        if self.pairs < 1:
            raise ValueError(f"grid.pairs must be >= 1, got {self.pairs}")
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"grid search needs at least two classes, got {num_classes}")


@dataclass
class GridResult:
    rows: list[dict]  # one per (alpha, beta): alpha, beta, m_s, m_d, m_total (+ _std)
    pairs: list[tuple[int, int]]
    preview: torch.Tensor | None = field(default=None)  # uint8 (A, B, C, H, W), pair 0 sample 0

    def best(self) -> dict:
        return max(self.rows, key=lambda r: r["m_total"])


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _std(x: torch.Tensor) -> float:
    return float(x.std(unbiased=False))


def _score_row(alpha, betas, pairs, feats, real_feats, real_labels, k, backend) -> list[dict]:
    """feats (B, P, K, D) for one alpha -> one dict per beta, averaged over the pairs."""
    rows = []
    for b, beta in enumerate(betas):
        scores = []
        for p, (i, j) in enumerate(pairs):
            src_i = real_feats[real_labels == i]
            src_j = real_feats[real_labels == j]
            scores.append(mixing_scores(feats[b, p], src_i, src_j, backend=backend))
        s = torch.tensor(scores, dtype=torch.float64)
        tot = s.sum(1)
        rows.append(
            {
                "alpha": float(alpha),
                "beta": float(beta),
                "m_s": float(s[:, 0].mean()),
                "m_d": float(s[:, 1].mean()),
                "m_total": float(tot.mean()),
                "m_s_std": _std(s[:, 0]),
                "m_d_std": _std(s[:, 1]),
                "m_total_std": _std(tot),
                "pairs": len(pairs),
                "samples": k,
            }
        )
    return rows


def grid_search(
    sample_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    real_feats: torch.Tensor,
    real_labels: torch.Tensor,
    label_dim: int,
    cfg: GridConfig,
    state_path: str | os.PathLike | None = None,
    progress: bool = False,
    after_row: Callable[[int], None] | None = None,
) -> GridResult:
    """Score every (alpha, beta) of ``cfg`` and return the per-cell table.

    ``sample_fn(conditions (M, label_dim) float, seeds (M,) int64) -> uint8 (M, C, H, W)``;
    ``embed_fn(uint8 images) -> (M, D)`` features; ``real_feats``/``real_labels`` are the
    real training features (the source centroids). ``after_row(a)`` runs after alpha row
    ``a`` is saved (a test hook to simulate a crash).
    """
    present = torch.unique(torch.as_tensor(real_labels))
    cfg.validate(len(present))
    real_feats = l2_normalize(real_feats)
    real_labels = torch.as_tensor(real_labels, dtype=torch.long)
    # Pairs are drawn among classes that have real images (their centroids are needed).
    pick = sample_pairs(len(present), cfg.pairs, seed=cfg.seed)
    pairs = [(int(present[a]), int(present[b])) for a, b in pick.tolist()]
    k, nb, npairs = cfg.samples_per_cell, len(cfg.betas), len(pairs)

    state = {"config": asdict(cfg), "pairs": pairs, "rows": {}}
    path = Path(state_path) if state_path is not None else None
    preview_path = path.with_suffix(".preview.safetensors") if path is not None else None
    previews: dict[int, torch.Tensor] = {}
    if path is not None and path.exists():
        old = read_json(path)
        if old.get("config") == json.loads(json.dumps(asdict(cfg))) and old["pairs"] == [
            list(p) for p in pairs
        ]:
            state["rows"] = old["rows"]
            if preview_path.exists():
                saved = load_bundle(preview_path)
                previews = {int(a): saved[a] for a in saved}

    pi = torch.tensor([p[0] for p in pairs]).repeat_interleave(k)
    pj = torch.tensor([p[1] for p in pairs]).repeat_interleave(k)
    seeds = (cfg.seed * 1_000_000 + torch.arange(npairs * k)).repeat(nb)
    bar = tqdm(total=len(cfg.alphas) * nb, desc="grid (cells)", disable=not progress)
    for a, alpha in enumerate(cfg.alphas):
        if str(a) in state["rows"]:
            bar.update(nb)
            continue
        cond = torch.cat(
            [mix_conditions(pi, pj, alpha, beta, label_dim, cfg.max_coef) for beta in cfg.betas]
        )
        images = sample_fn(cond, seeds)
        previews[a] = images.view(nb, npairs, k, *images.shape[1:])[:, 0, 0].clone()
        feats = l2_normalize(embed_fn(images)).view(nb, npairs, k, -1)
        state["rows"][str(a)] = _score_row(
            alpha, cfg.betas, pairs, feats, real_feats, real_labels, k, cfg.backend
        )
        if path is not None:
            save_bundle({str(a): v for a, v in previews.items()}, preview_path)
            _save_state(path, state)
        bar.update(nb)
        if after_row is not None:
            after_row(a)
    bar.close()
    rows = [r for a in range(len(cfg.alphas)) for r in state["rows"][str(a)]]
    preview = torch.stack([previews[a] for a in range(len(cfg.alphas))]) if previews else None
    return GridResult(rows=rows, pairs=pairs, preview=preview)
