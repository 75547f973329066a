"""Files written by the grid search: grid.csv, heatmap.png (m_s, m_d, m_total), best.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from auggen.infra.files import atomic_path

COLUMNS = ("alpha", "beta", "m_s", "m_d", "m_total", "m_s_std", "m_d_std", "m_total_std")


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def write_grid_csv(path, rows: list[dict]) -> None:
    path = Path(path)

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(COLUMNS) + ["pairs", "samples"])
            w.writeheader()
            for r in rows:
                w.writerow({k: r[k] for k in w.fieldnames})

    _atomic(path, write)


def read_grid_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def best_cell(rows: list[dict]) -> dict:
    """The row with the highest m_total (the first one on ties)."""
    return max(rows, key=lambda r: r["m_total"])


def write_best(path, rows: list[dict], pairs=None) -> dict:
    b = best_cell(rows)
    out = {
        "alpha": b["alpha"],
        "beta": b["beta"],
        "m_s": b["m_s"],
        "m_d": b["m_d"],
        "m_total": b["m_total"],
        "pairs": [list(p) for p in (pairs or [])],
    }
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(out, indent=2)))
    return out


def grid_matrix(rows: list[dict], key: str):
    """(alphas, betas, M) with M[a, b] = rows' ``key`` at (alphas[a], betas[b])."""
    alphas = sorted({r["alpha"] for r in rows})
    betas = sorted({r["beta"] for r in rows})
    m = np.full((len(alphas), len(betas)), np.nan)
    for r in rows:
        m[alphas.index(r["alpha"]), betas.index(r["beta"])] = r[key]
    return alphas, betas, m


def plot_heatmaps(path, rows: list[dict], title: str = "") -> None:
    """Three heatmaps side by side (alpha on rows, beta on columns), best cell marked."""
    import matplotlib  # optional heavy dependency: only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = best_cell(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, key in zip(axes, ("m_s", "m_d", "m_total")):
        alphas, betas, m = grid_matrix(rows, key)
        im = ax.imshow(m, origin="lower", cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas], fontsize=7)
        ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas], fontsize=7)
        ax.set_xlabel("beta")
        ax.set_ylabel("alpha")
        ax.set_title(key)
        ax.plot(betas.index(best["beta"]), alphas.index(best["alpha"]), "r*", ms=12)
        if m.size <= 49:
            for a in range(len(alphas)):
                for b in range(len(betas)):
                    ax.text(b, a, f"{m[a, b]:.2f}", ha="center", va="center", fontsize=6, color="w")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title or f"grid search: best alpha={best['alpha']:g}, beta={best['beta']:g}")
    fig.tight_layout()
    path = Path(path)
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
