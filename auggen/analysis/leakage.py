"""Leakage audit (beyond the paper): is a generated face a copy of a real training face?

For every generated image, its nearest real training image in M_orig feature space
(cosine, FAISS). Generated images at cos >= threshold are flagged as near-copies. For
scale, the same statistic for real held-out images (other photos of training identities)
is reported beside it: a generated identity should sit further from the training set than
a real photo of a training identity does.

Scale (CASIA: 0.49 M real images, millions of generated ones): images are read and embedded
``batch_size`` at a time (optionally decoded ahead on threads), so only the real embeddings are
held (N x D float32, ~1 GB for CASIA; float32 keeps the cosines of a small run identical to
the in-memory audit), and each generated batch is searched as soon as it is embedded. Above
``exact_limit`` query x real pairs the search is an IVF index whose nprobe is calibrated on
a random sample of the generated images (see ``auggen.mixing.nn_index``); leakage.json
records which (``search``: kind, recall@1 on the sample, sample size).
"""

from __future__ import annotations

import csv
import heapq

import numpy as np
import torch

from auggen.analysis.figures import pyplot, save_figure
from auggen.data.source import ImageSource, TensorSource, as_source
from auggen.data.types import LabeledImages
from auggen.eval.embeddings import embed_source, iter_embeddings
from auggen.infra.files import atomic_path, atomic_write_json
from auggen.mixing.nn_index import RECALL_SAMPLE, NearestIndex

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def _summary(cos: np.ndarray) -> dict:
    return {
        "count": len(cos),
        "mean": float(cos.mean()),
        "quantiles": {f"q{int(q * 100):02d}": float(np.quantile(cos, q)) for q in QUANTILES},
    }


def _source(data) -> ImageSource:
    if torch.is_tensor(data):  # bare uint8 images (the held-out probes): labels unused
        data = LabeledImages(data, torch.zeros(len(data), dtype=torch.long), [], 1)
    return as_source(data)


def _nearest_all(embed, index: NearestIndex, src: ImageSource, batch: int, workers: int):
    cos, idx = np.empty(len(src), np.float32), np.empty(len(src), np.int64)
    for lo, f in iter_embeddings(embed, src, batch, workers=workers):
        s, i = index.search(f.numpy(), 1)
        cos[lo : lo + len(f)], idx[lo : lo + len(f)] = s[:, 0], i[:, 0]
    return cos, idx


def _write_rows(path, rows, keep: int) -> tuple[int, int, list[dict]]:
    """leakage.csv a row at a time (as ``store.write_csv`` writes a list, atomically), so
    millions of generated images never sit in memory as dicts. Returns the row count, how
    many have a source identity nearest, and the ``keep`` highest-cos rows (earlier first
    among equal cos, as a stable sort would give)."""
    n = n_source = 0
    top: list = []  # min-heap of (cos, -row number, row)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = None
        for n, row in enumerate(rows, 1):
            if writer is None:
                writer = csv.DictWriter(f, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            n_source += bool(row["nearest_is_source"])
            item = (row["cos"], -n, row)
            if len(top) < keep:
                heapq.heappush(top, item)
            elif item[:2] > top[0][:2]:
                heapq.heapreplace(top, item)
        if writer is None:
            f.write("\r\n")  # what DictWriter writes for a header without fields
    return n, n_source, [r for _, _, r in sorted(top, key=lambda t: t[:2], reverse=True)]


def _sources(row: dict) -> set[int]:
    """The original classes a generated identity mixes (two, or k with ``sources``)."""
    if row.get("sources"):
        return {int(c) for c in str(row["sources"]).split(";")}
    return {int(row["source_i"]), int(row["source_j"])}


def _real_feats(embed, real_src, batch_size: int, num_workers: int, given) -> np.ndarray:
    if given is None:
        return embed_source(embed, real_src, batch_size, workers=num_workers).numpy()
    given = np.asarray(torch.as_tensor(given, dtype=torch.float32))
    if given.shape[0] != len(real_src):
        raise ValueError(f"real_feats has {given.shape[0]} rows for {len(real_src)} real images")
    return given


def leakage_audit(
    embed,
    aug,
    manifest,
    real,
    out_dir,
    threshold: float,
    heldout=None,
    *,
    batch_size: int = 1024,
    num_workers: int = 0,
    exact_limit: float | None = None,
    recall_sample: int = RECALL_SAMPLE,
    seed: int = 0,
    real_feats=None,
) -> dict:
    """Writes leakage.csv / .json / .png into ``out_dir``; returns the json summary.

    ``aug``/``real``/``heldout``: LabeledImages or ImageSources (``heldout`` may also be bare
    uint8 images); ``embed``: uint8 (B, 3, S, S) -> L2-normalised (B, D). ``real_feats``:
    ``real``'s (N, D) embeddings by this ``embed`` when the caller has them (else embedded here).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    aug_src, real_src = _source(aug), _source(real)
    held_src = _source(heldout) if heldout is not None and len(heldout) else None
    n_queries = len(aug_src) + (len(held_src) if held_src is not None else 0)
    pick = np.random.default_rng(seed).choice(
        len(aug_src), min(recall_sample, len(aug_src)), replace=False
    )
    index = NearestIndex(
        # The index keeps the only reference to the real embeddings.
        _real_feats(embed, real_src, batch_size, num_workers, real_feats),
        n_queries,
        exact_limit=exact_limit,
        # Only embedded when an IVF is built: re-reading a sample beats holding every query.
        calibration=lambda: embed(aug_src.read(np.sort(pick))),
        seed=seed,
    )
    cos, idx = _nearest_all(embed, index, aug_src, batch_size, num_workers)
    nn_labels = real_src.labels[torch.from_numpy(idx)].tolist()
    plain = isinstance(real_src, TensorSource) and not real_src.names
    rows = (
        {
            "file": r["file"],
            "label": r["label"],
            "source_i": r["source_i"],
            "source_j": r["source_j"],
            # in-memory images without names are named by their index, as before
            "nearest_real": i if plain else real_src.name(i),
            "nearest_real_label": lab,
            "nearest_is_source": lab in _sources(r),
            "cos": round(float(c), 6),
            "near_copy": bool(c >= threshold),
        }
        for r, c, i, lab in zip(manifest, cos, idx.tolist(), nn_labels)
    )
    n_rows, n_source, worst = _write_rows(out_dir / "leakage.csv", rows, keep=5)
    flagged = cos >= threshold
    summary = {
        "threshold": threshold,
        "generated": _summary(cos),
        "near_copies": int(flagged.sum()),
        "near_copy_fraction": float(flagged.mean()),
        "nearest_is_a_source_fraction": n_source / n_rows if n_rows else float("nan"),
        "worst": worst,
    }
    ref = None
    if held_src is not None:
        ref = _nearest_all(embed, index, held_src, batch_size, num_workers)[0]
        summary["real_heldout_reference"] = _summary(ref)
        # A scale-free flag: closer to a training image than a typical other real photo of
        # the same person is (the absolute threshold depends on how M_orig spreads faces).
        summary["closer_than_heldout_median_fraction"] = float(np.mean(cos >= np.median(ref)))
    summary["search"] = dict(index.info)
    atomic_write_json(out_dir / "leakage.json", summary)
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
