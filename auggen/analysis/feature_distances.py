"""The report's FD and KD of D_repro and D_aug against D_orig, in M_orig's feature space.

No stage keeps embeddings of whole datasets, so the report embeds the three sets with M_orig
(flip-fused, unit rows, the same embedder as the grid and the leakage audit). D_orig is read
at the generator's resolution, as G saw it, so the distances compare content rather than
sharpness. Sets larger than ``MAX_IMAGES`` are represented by evenly spaced images. Two
halves of D_orig (even and odd images) give the distances' floor at this sample size.
"""

from __future__ import annotations

import numpy as np
import torch

from auggen.eval.embeddings import embed_source
from auggen.eval.fd_kd import frechet_distance, kernel_distance
from auggen.eval.paired import paired_difference

MAX_IMAGES = 20_000  # per set (CASIA holds 0.49 M: embedding all of it would take minutes)
# Generated set -> (stage, index of its images only: aug.index.json holds just the new ids).
SETS = {"repro": ("repro", "repro.index.json"), "aug": ("generate", "aug.index.json")}
LABELS = {"orig_halves": "D_orig: even vs odd images (floor)", "repro": "D_repro", "aug": "D_aug"}


def spread(n: int, cap: int = MAX_IMAGES) -> np.ndarray:
    """All of ``range(n)``, or ``cap`` evenly spaced indices of it."""
    if n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def set_features(embed, sources: dict, batch: int) -> dict[str, torch.Tensor]:
    """{name: ImageSource} -> embeddings of each set (``spread``: at most ``MAX_IMAGES``
    evenly spaced images), in the order given."""
    return {name: embed_source(embed, s, batch, spread(len(s))) for name, s in sources.items()}


def distances(feats: dict[str, torch.Tensor]) -> dict[str, dict]:
    """FD and KD of each generated set against D_orig, and of D_orig's two halves."""
    orig = feats["orig"]
    pairs = {"orig_halves": (orig[0::2], orig[1::2])}
    pairs.update({name: (feats[name], orig) for name in SETS if name in feats})
    out = {}
    for name, (x, y) in pairs.items():
        kd = kernel_distance(x, y)
        out[name] = {
            "images": len(x),
            "reference_images": len(y),
            "fd": frechet_distance(x, y),
            "kd": kd.value,
            "kd_std": kd.std,
            "kd_subsets": kd.subsets,
        }
    return out


def accuracy_changes(metric_rows: list[dict], variant: str) -> dict[str, float]:
    """Mean paired (same seed) change in verification accuracy against D_orig, per benchmark."""
    per: dict[tuple, dict[str, float]] = {}
    for r in metric_rows:
        if r["metric"] == "accuracy":
            per.setdefault((r["model"], r["benchmark"]), {})[str(r["seed"])] = float(r["value"])
    out = {}
    for (model, bench), new in per.items():
        base = per.get(("baseline", bench), {})
        seeds = sorted(set(base) & set(new))
        if model == variant and seeds:
            out[bench] = paired_difference([new[s] for s in seeds], [base[s] for s in seeds]).mean
    return out


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "\u2212")  # a real minus sign, as in the results table


def mix_scores(grid_rows: list[dict], alpha: float, beta: float) -> dict:
    """The grid cell's m_s and m_d at D_aug's (alpha, beta); {} when the grid has no such cell."""
    for r in grid_rows:
        if np.isclose(float(r["alpha"]), alpha) and np.isclose(float(r["beta"]), beta):
            return {"m_s": float(r["m_s"]), "m_d": float(r["m_d"])}
    return {}


def table(dist: dict[str, dict], scores: dict, metric_rows: list[dict]) -> list[str]:
    """Markdown: FD, KD, m_s, m_d (D_aug's cell) and the paired accuracy change of each set."""
    benches = sorted({r["benchmark"] for r in metric_rows if r["metric"] == "accuracy"})
    head = "| data | images | FD | KD (×10³) | m_s | m_d |"
    head += "".join(f" Δ {b} accuracy (points) |" for b in benches)
    lines = [head, "|---|---:|---:|---:|---:|---:|" + "---:|" * len(benches)]
    for name, d in dist.items():
        m = scores if name == "aug" else {}
        ms = f"{m['m_s']:.3f}" if "m_s" in m else "–"
        md = f"{m['m_d']:.3f}" if "m_d" in m else "–"
        delta = accuracy_changes(metric_rows, name) if name in SETS else {}
        cells = "".join(f" {_signed(100 * delta[b])} |" if b in delta else " – |" for b in benches)
        kd = f"{1e3 * d['kd']:.2f}" + (f" ± {1e3 * d['kd_std']:.2f}" if d["kd_subsets"] > 1 else "")
        lines.append(
            f"| {LABELS[name]} | {d['images']} | {d['fd']:.4f} | {kd} | {ms} | {md} |{cells}"
        )
    return lines
