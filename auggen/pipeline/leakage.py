"""Leakage audit (beyond the paper): is a generated face a copy of a real training face?

For every generated image, its nearest real training image in M_orig feature space
(cosine, FAISS). Generated images at cos >= threshold are flagged as near-copies. For
scale, the same statistic for real held-out images (other photos of training identities)
is reported beside it: a generated identity should sit further from the training set than
a real photo of a training identity does.
"""

from __future__ import annotations

import numpy as np

from auggen.mixing.search import search_inner_product
from auggen.pipeline.figures import pyplot, save_figure
from auggen.pipeline.stage import write_json
from auggen.pipeline.store import write_csv

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def _summary(cos: np.ndarray) -> dict:
    return {
        "count": len(cos),
        "mean": float(cos.mean()),
        "quantiles": {f"q{int(q * 100):02d}": float(np.quantile(cos, q)) for q in QUANTILES},
    }


def leakage_audit(embed, aug, manifest, real, out_dir, threshold: float, heldout=None) -> dict:
    real_feats = embed(real.images)
    aug_feats = embed(aug.images)
    cos, idx = search_inner_product(aug_feats, real_feats, k=1)
    cos, idx = cos[:, 0].numpy(), idx[:, 0]
    nn_labels = real.labels[idx]
    rows = []
    for r, c, i, lab in zip(manifest, cos, idx.tolist(), nn_labels.tolist()):
        rows.append(
            {
                "file": r["file"],
                "label": r["label"],
                "source_i": r["source_i"],
                "source_j": r["source_j"],
                "nearest_real": real.names[i] if real.names else i,
                "nearest_real_label": lab,
                "nearest_is_source": lab in (r["source_i"], r["source_j"]),
                "cos": round(float(c), 6),
                "near_copy": bool(c >= threshold),
            }
        )
    write_csv(out_dir / "leakage.csv", rows)
    flagged = cos >= threshold
    summary = {
        "threshold": threshold,
        "generated": _summary(cos),
        "near_copies": int(flagged.sum()),
        "near_copy_fraction": float(flagged.mean()),
        "nearest_is_a_source_fraction": float(np.mean([r["nearest_is_source"] for r in rows])),
        "worst": sorted(rows, key=lambda r: -r["cos"])[:5],
    }
    ref = None
    if heldout is not None and len(heldout):
        ref = search_inner_product(embed(heldout), real_feats, k=1)[0][:, 0].numpy()
        summary["real_heldout_reference"] = _summary(ref)
        # A scale-free flag: closer to a training image than a typical other real photo of
        # the same person is (the absolute threshold depends on how M_orig spreads faces).
        summary["closer_than_heldout_median_fraction"] = float(np.mean(cos >= np.median(ref)))
    write_json(out_dir / "leakage.json", summary)
    _plot(cos, ref, threshold, out_dir / "leakage.png")
    return summary


def _plot(cos, ref, threshold, path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(min(-0.2, float(np.min(cos))), 1.0, 41)
    ax.hist(cos, bins=bins, alpha=0.7, label="generated (D_aug) -> nearest real", density=True)
    if ref is not None:
        ax.hist(ref, bins=bins, alpha=0.5, label="real held-out -> nearest real", density=True)
    ax.axvline(threshold, color="r", ls="--", label=f"near-copy threshold {threshold:g}")
    ax.set_xlabel("cosine similarity to the nearest real training image (M_orig)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
