"""Stage ``grid``: the (alpha, beta) grid search with M_orig features -> best.json.

Rows of the grid are split across torchrun ranks (``rows/``: one file per finished row, the
unit of resume); M_orig's embeddings of D_orig are split by blocks and gathered. Rank 0
writes grid.csv, heatmap.png (m_s, m_d, m_total), best.json, preview.png (pair 0, sample 0
across the grid, its two sources on the left) and stats.json (images/s, seconds per cell).

With ``generate.mix=score`` (ScoreMix needs no (alpha, beta)) the stage searches nothing and
writes ``skipped.json``, unless ``generate.run_grid`` asks for the search; ``inputs`` puts
the skip in the fingerprint, so a skipped grid is never taken for a finished search.
"""

from __future__ import annotations

import time

import torch

from auggen.data import resize_images
from auggen.data.montage import montage, save_png
from auggen.eval.embeddings import embed_source
from auggen.infra import runtime
from auggen.infra.faults import fault_point
from auggen.mixing import grid_search, plot_heatmaps, write_best, write_grid_csv
from auggen.mixing.choice import grid_skipped
from auggen.pipeline.stage import write_json
from auggen.pipeline.stages.common import (
    embedder,
    load_gen,
    m_orig,
    open_data,
    sampler,
)

SKIPPED = "skipped.json"


def inputs(cfg):
    """The stage's fingerprint extra: only a skipped search has one (None keeps old runs')."""
    return {"grid": "skipped: generate.mix=score"} if grid_skipped(cfg) else None


def run(cfg, in_dirs, out_dir, rt: runtime.Runtime) -> None:
    if grid_skipped(cfg):
        if rt.is_main:
            why = "generate.mix=score mixes denoiser outputs with convex weights: no search"
            write_json(out_dir / SKIPPED, {"skipped": True, "why": why})
        return
    real = open_data(in_dirs)
    embed = embedder(m_orig(cfg, in_dirs, rt.device), cfg, rt.device)
    net = load_gen(in_dirs, rt.device)
    real_feats = embed_source(embed, real, cfg.embed.batch_size, split=True)
    sample_fn, timed = sampler(net, cfg, rt), {"s": 0.0, "images": 0}

    def timed_sample(cond, seeds):
        t = time.perf_counter()
        x = sample_fn(cond, seeds)
        timed["s"] += time.perf_counter() - t
        timed["images"] += len(x)
        return x

    t0 = time.perf_counter()
    res = grid_search(
        timed_sample,
        embed,
        real_feats,
        real.labels,
        net.label_dim,
        cfg.grid,
        state_dir=out_dir / "rows",
        progress=cfg.progress,
        after_row=lambda a: fault_point("grid", a),
    )
    wall = time.perf_counter() - t0
    if not rt.is_main:
        return  # rank 0 writes the outputs
    write_grid_csv(out_dir / "grid.csv", res.rows)
    write_best(out_dir / "best.json", res.rows, res.pairs)
    plot_heatmaps(out_dir / "heatmap.png", res.rows)
    cells = len(res.rows)
    images = cells * cfg.grid.pairs * cfg.grid.samples_per_cell
    # Rates come from the cells sampled in this attempt (a resumed search skips some).
    done = timed["images"] // (cfg.grid.pairs * cfg.grid.samples_per_cell)
    write_json(
        out_dir / "stats.json",
        {
            "cells": cells,
            "images": images,
            "cells_this_attempt": done,
            "wall_s_this_attempt": wall,
            "sample_s_this_attempt": timed["s"],
            "images_per_s": timed["images"] / timed["s"] if timed["s"] > 0 else None,
            "s_per_cell": wall / done if done else None,
            "sampler_steps": cfg.sample.num_steps,
        },
    )
    if res.preview is not None:
        i, j = res.pairs[0]
        first = [int((real.labels == c).nonzero()[0]) for c in (i, j)]
        src = list(real.read(first))
        size = res.preview.shape[-1]
        src = list(resize_images(torch.stack(src), size))
        rows = [[src[0], src[1]] + list(res.preview[a]) for a in range(len(res.preview))]
        save_png(montage(rows), out_dir / "preview.png", scale=2)
