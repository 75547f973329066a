"""Stage ``evaluate``: every FR model (baseline, +D_repro, +D_aug; every seed) on every benchmark.

Writes metrics.csv (one row per model, seed, benchmark, metric) and summary.json (mean and
std over seeds). Verification: 10-fold accuracy on insightface's threshold grid and TAR@FAR
(only FARs with at least ``eval.min_impostors_per_far`` impostor pairs per unit of FAR);
identification: rank-1. Each model (variant, seed) is one unit, saved as
``models/<variant>-seed<k>.json`` when scored (the unit of resume); under torchrun unit u goes
to rank u mod K (a model's benchmarks stay on one rank: at most #variants x #seeds ranks are
busy), and rank 0 joins them.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from auggen.data import read_verification_bin
from auggen.data.index import open_index
from auggen.data.source import TensorSource
from auggen.data.types import LabeledImages
from auggen.eval import pair_scores, rank1_identification, tar_at_far, verification_accuracy
from auggen.eval.embeddings import embed_source
from auggen.infra import runtime
from auggen.infra.files import read_json
from auggen.pipeline.stage import write_json
from auggen.pipeline.stages.common import embedder, fr_run_dir, load_fr
from auggen.pipeline.store import load, write_csv

MODEL_LABELS = {"baseline": "D_orig", "repro": "D_orig + D_repro", "aug": "D_orig + D_aug"}


def load_benchmarks(data_dir: Path) -> list[dict]:
    """The benchmarks of ``benchmarks.json``: image sources (indexes), pairs, labels."""

    out = []
    for b in read_json(data_dir / "benchmarks.json"):
        if b["kind"] == "verification_bin":
            images, issame = read_verification_bin(b["file"])
            n = len(issame)
            t = {
                "images": TensorSource(LabeledImages(images, torch.zeros(len(images)))),
                "idx_a": torch.arange(0, 2 * n, 2),
                "idx_b": torch.arange(1, 2 * n, 2),
                "issame": torch.as_tensor(issame),
            }
            out.append({**b, "kind": "verification", "data": t})
        elif b["kind"] == "verification":
            t = {"images": open_index(data_dir / b["images"]), **load(data_dir / b["pairs"])}
            out.append({**b, "data": t})
        else:
            t = {k: open_index(data_dir / b[k]) for k in ("gallery", "probe")}
            out.append({**b, "data": t})
    return out


def evaluate_model(embed, bench: dict, cfg) -> dict[str, float]:
    d, bs = bench["data"], cfg.embed.batch_size
    if bench["kind"] == "identification":
        probe, gallery = d["probe"], d["gallery"]
        acc = rank1_identification(
            embed_source(embed, probe, bs),
            probe.labels,
            embed_source(embed, gallery, bs),
            gallery.labels,
        )
        return {"rank1": float(acc)}
    feats = embed_source(embed, d["images"], bs)
    scores = pair_scores(feats, d["idx_a"], d["idx_b"])
    issame = torch.as_tensor(d["issame"]).bool()
    # insightface's threshold grid, so the accuracy compares with published numbers.
    mean, std = verification_accuracy(
        scores, issame, nfolds=cfg.eval.nfolds, thresholds="insightface"
    )
    out = {"accuracy": float(mean), "accuracy_fold_std": float(std)}
    n_imp = int((~issame).sum())
    for far in cfg.eval.fars:
        if far * n_imp >= cfg.eval.min_impostors_per_far:
            out[f"tar@far={far:g}"] = float(tar_at_far(scores, issame, far))
    return out


def models(cfg, in_dirs):
    yield "baseline", in_dirs["train_fr"]
    for v in cfg.train_mix.variants:
        yield v, in_dirs["train_mix"]


def run(cfg, in_dirs, out_dir, rt: runtime.Runtime) -> None:
    benches = load_benchmarks(in_dirs["data"])
    units = [(v, d, seed) for v, d in models(cfg, in_dirs) for seed in cfg.seeds]
    unit_dir = out_dir / "models"
    unit_dir.mkdir(exist_ok=True)
    for variant, stage_dir, seed in runtime.my_items(units, rt):  # a model per rank at a time
        path = unit_dir / f"{variant}-seed{seed}.json"
        if path.exists():
            continue  # evaluated before an interruption
        embed = embedder(load_fr(fr_run_dir(stage_dir, variant, seed), rt.device), cfg, rt.device)
        rows = [
            {"model": variant, "seed": seed, "benchmark": b["name"], "metric": m, "value": v}
            for b in benches
            for m, v in evaluate_model(embed, b, cfg).items()
        ]
        write_json(path, rows)
    runtime.barrier("evaluate: every rank's models scored", rt)
    if not rt.is_main:
        return
    rows = [r for v, _, seed in units for r in read_json(unit_dir / f"{v}-seed{seed}.json")]
    write_csv(out_dir / "metrics.csv", rows)
    write_json(out_dir / "summary.json", summarize(rows))
    write_json(
        out_dir / "benchmarks.json", [{k: v for k, v in b.items() if k != "data"} for b in benches]
    )


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and population std over seeds for every (model, benchmark, metric)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["benchmark"], r["metric"])].append(float(r["value"]))
    return [
        {
            "model": m,
            "benchmark": b,
            "metric": k,
            "mean": float(np.mean(v)),
            "std": float(np.std(v)),
            "seeds": len(v),
        }
        for (m, b, k), v in groups.items()
    ]
