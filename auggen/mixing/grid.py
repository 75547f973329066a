"""Grid search over (alpha, beta): sample mixed identities, score them, pick the best.

For every alpha row, all (beta, pair, sample) conditions go through the sampler as one
large batch of condition rows. Sample k of pair p uses the same noise seed in every cell
(common random numbers), so cells differ by (alpha, beta) and not by noise. Each finished
row is saved on its own (``rowNNN.json`` + its preview, atomically) in the state folder, so
an interrupted search resumes; under torchrun row a goes to rank a mod K, and since a row's
images depend only on its own seeds the table is the same for any K.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from auggen.infra import runtime
from auggen.infra.files import atomic_write_json, load_bundle, read_json, save_bundle
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


def _row_files(state_dir: Path, a: int) -> tuple[Path, Path]:
    return state_dir / f"row{a:03d}.json", state_dir / f"row{a:03d}.preview.safetensors"


def _load_row(state_dir: Path, a: int, key: dict):
    """(rows, preview) of a finished alpha row saved with the same config and pairs, or None."""
    rows_path, preview_path = _row_files(state_dir, a)
    if not (rows_path.exists() and preview_path.exists()):
        return None
    saved = read_json(rows_path)
    if {k: saved.get(k) for k in key} != key:
        return None  # another grid's row: sampled again
    return saved["rows"], load_bundle(preview_path)["preview"]


def grid_search(
    sample_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    real_feats: torch.Tensor,
    real_labels: torch.Tensor,
    label_dim: int,
    cfg: GridConfig,
    state_dir: str | os.PathLike | None = None,
    progress: bool = False,
    after_row: Callable[[int], None] | None = None,
) -> GridResult:
    """Score every (alpha, beta) of ``cfg`` and return the per-cell table.

    ``sample_fn(conditions (M, label_dim) float, seeds (M,) int64) -> uint8 (M, C, H, W)``;
    ``embed_fn(uint8 images) -> (M, D)`` features; ``real_feats``/``real_labels`` are the
    real training features (the source centroids). ``state_dir`` keeps finished rows for a
    resume (needed under several processes: the ranks meet there). ``after_row(a)`` runs
    after alpha row ``a`` is saved (a test hook to simulate a crash).
    """
    present = torch.unique(torch.as_tensor(real_labels))
    cfg.validate(len(present))
    real_feats = l2_normalize(real_feats)
    real_labels = torch.as_tensor(real_labels, dtype=torch.long)
    # Pairs are drawn among classes that have real images (their centroids are needed).
    pick = sample_pairs(len(present), cfg.pairs, seed=cfg.seed)
    pairs = [(int(present[a]), int(present[b])) for a, b in pick.tolist()]
    k, nb, npairs = cfg.samples_per_cell, len(cfg.betas), len(pairs)
    rt = runtime.current()
    state = Path(state_dir) if state_dir is not None else None
    if state is None and rt.enabled:
        raise ValueError("grid_search under several processes needs a state_dir to meet in")
    if state is not None:
        state.mkdir(parents=True, exist_ok=True)
    key = json.loads(json.dumps({"config": asdict(cfg), "pairs": pairs}))

    rows: dict[int, list[dict]] = {}
    previews: dict[int, torch.Tensor] = {}
    pi = torch.tensor([p[0] for p in pairs]).repeat_interleave(k)
    pj = torch.tensor([p[1] for p in pairs]).repeat_interleave(k)
    seeds = (cfg.seed * 1_000_000 + torch.arange(npairs * k)).repeat(nb)
    mine = runtime.my_items(range(len(cfg.alphas)), rt)
    bar = tqdm(total=len(mine) * nb, desc="grid (cells)", disable=not progress)
    for a in mine:
        done = _load_row(state, a, key) if state is not None else None
        if done is not None:
            bar.update(nb)
            continue
        alpha = cfg.alphas[a]
        cond = torch.cat(
            [mix_conditions(pi, pj, alpha, beta, label_dim, cfg.max_coef) for beta in cfg.betas]
        )
        images = sample_fn(cond, seeds)
        previews[a] = images.view(nb, npairs, k, *images.shape[1:])[:, 0, 0].clone()
        feats = l2_normalize(embed_fn(images)).view(nb, npairs, k, -1)
        rows[a] = _score_row(
            alpha, cfg.betas, pairs, feats, real_feats, real_labels, k, cfg.backend
        )
        if state is not None:
            rows_path, preview_path = _row_files(state, a)
            save_bundle({"preview": previews[a]}, preview_path)
            atomic_write_json(rows_path, {**key, "rows": rows[a]})  # last: marks the row done
        bar.update(nb)
        if after_row is not None:
            after_row(a)
    bar.close()
    if state is not None:
        runtime.barrier("grid: every rank's rows written", rt)
        for a in range(len(cfg.alphas)):
            if a not in rows:
                done = _load_row(state, a, key)
                if done is None:
                    raise RuntimeError(f"{state}: alpha row {a} is missing after every rank ended")
                rows[a], previews[a] = done
    table = [r for a in range(len(cfg.alphas)) for r in rows[a]]
    preview = torch.stack([previews[a] for a in range(len(cfg.alphas))])
    return GridResult(rows=table, pairs=pairs, preview=preview)
