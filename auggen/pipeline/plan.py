"""``--plan``: what a config costs before it runs — work, FLOPs, disk, host RAM, GPU-hours.

Per stage: images through each network, optimizer steps, denoiser evaluations, and FLOPs
from the networks' own counts (``torch.utils.flop_counter`` over one forward of the built
generator and backbone; a training step is counted as 3 forwards, the usual fwd + 2x bwd).
Hours = FLOPs / (K GPUs x peak dense bf16 FLOP/s x utilisation): a planning figure, not a
measurement; the utilisation is stated with every table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from auggen.data.dataset import dataset_size
from auggen.data.index import open_index
from auggen.data.split import choose_unseen
from auggen.mixing.choice import grid_skipped
from auggen.pipeline.calibrate import stage_minutes
from auggen.pipeline.cost import (
    denoiser_evals,
    generator_cost,
    human,
    recogniser_cost,
    rows_per_image,
)
from auggen.pipeline.plan_mixing import mode_lines

# Dense bf16 tensor-core peak per GPU, FLOP/s (vendor datasheets, SXM parts, no sparsity).
GPU_PEAK = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "l40s": 362e12, "v100": 125e12}
DEFAULT_UTILISATION = 0.35
PNG_RATIO = 0.6  # a PNG of a face crop is ~60 % of its raw bytes (measured on ORL/micro: 0.5-0.7)
BIN_IMAGES = 12_000  # images in one insightface verification .bin (LFW: 6,000 pairs)


@dataclass(frozen=True)
class DataSize:
    images: int
    classes: int
    source: str  # where the counts came from


def data_size(cfg, out_root: Path | None = None) -> DataSize:
    """The training set's size: from a finished ``data`` stage, else counted from the input."""
    if out_root is not None and (Path(out_root) / "data" / "DONE").exists():
        src = open_index(Path(out_root) / "data" / "train.index.json")
        return DataSize(len(src), src.num_classes, f"{out_root}/data (finished stage)")
    d = cfg.data
    n, classes, how = dataset_size(d.path, d.source)
    if d.source == "orl":  # the data stage's split, on the counted faces (all alike)
        per_all = n // max(classes, 1)
        ids = min(classes, d.max_identities) if d.max_identities else classes
        train_ids = ids - choose_unseen(ids, d)[0]  # the data stage's own rule
        per = per_all - d.heldout_per_identity
        return DataSize(train_ids * per, train_ids, f"ORL ({classes} x {per_all})")
    return DataSize(n, classes, how)


def stage_work(cfg, size: DataSize) -> list[dict]:
    """One row per stage: what it computes and stores."""
    n, c = size.images, size.classes
    g_flops, g_params = generator_cost(cfg, c)
    f_flops, head_flops, f_params = recogniser_cost(cfg, c)
    ev = denoiser_evals(cfg)
    px = 3 * cfg.gen.resolution**2
    embed = 2 * f_flops if cfg.embed.flip else f_flops  # flip-fused: two forwards per image
    seeds = len(cfg.seeds)
    fr_step = 3 * (f_flops + head_flops)
    g = cfg.gen
    g_steps = g.total_steps
    ck_bytes = g_params * 4 * (3 + len(g.ema_stds))  # net + Adam m, v + one EMA per std
    snap_bytes = g_params * (2 if g.snapshot_dtype == "bfloat16" else 4) * len(g.ema_stds)
    snaps = min(g.max_snapshots or 10**9, g_steps // g.snapshot_every) if g.snapshot_every else 0
    fr_ck = (f_params * 8 + c * cfg.fr.embedding_size * 8) * seeds  # weights + momentum
    repro_n = c * cfg.repro.images_per_identity
    gr = cfg.grid
    grid_n = len(gr.alphas) * len(gr.betas) * gr.pairs * gr.samples_per_cell
    grid_n *= not grid_skipped(cfg)  # generate.mix=score needs no grid
    gen_n = cfg.generate.new_identities * cfg.generate.images_per_identity
    variants = cfg.train_mix.variants
    mix_n = sum(n + (repro_n if v == "repro" else gen_n) for v in variants)
    bench = len(cfg.data.verification_bins) * BIN_IMAGES
    models = (1 + len(variants)) * seeds
    gen_bytes = gen_n * px * PNG_RATIO * (2 if cfg.generate.write_images else 1)
    gen_bytes *= 1.5 if cfg.generate.write_recordio else 1.0
    feats = n * cfg.fr.embedding_size * 4  # real embeddings held in RAM (grid, leakage)
    head_ram = c * cfg.fr.embedding_size * 4 * 4  # margin-head weights, grads, momentum

    def row(stage, images=0, steps=0, evals=0, flops=0.0, disk=0, ram=0) -> dict:
        return dict(stage=stage, images=images, steps=steps, evals=evals, flops=flops,
                    disk=disk, ram=ram)  # fmt: skip

    def fr_training(stage, per_epoch: int, disk) -> dict:
        images = cfg.fr.epochs * per_epoch * seeds
        steps = cfg.fr.epochs * (per_epoch // cfg.fr.batch_size) * seeds
        return row(stage, images, steps, 0, fr_step * images, disk, head_ram)

    def sampling(stage, images: int, embedded: int, disk, ram, ev=ev) -> dict:
        flops = g_flops * images * ev + embed * embedded
        r = row(stage, images, 0, images * ev, flops, disk, ram)
        return {**r, "sample_flops": g_flops * images * ev, "embed_flops": embed * embedded}

    gen_images = g_steps * g.batch_size
    return [
        row("data", n, disk=n * 24, ram=n * 24),
        row(
            "train_gen",
            gen_images,
            g_steps,
            0,
            3 * g_flops * gen_images,
            ck_bytes * g.keep_checkpoints + snap_bytes * snaps,
            ck_bytes,
        ),  # fmt: skip
        fr_training("train_fr", n, fr_ck),
        sampling("repro", repro_n, 0, repro_n * px * PNG_RATIO, g_params * 4),
        sampling("grid", grid_n, grid_n + n, len(gr.alphas) * len(gr.betas) * px, feats),
        # D_orig embedded once: for the class centroids, then reused by the leakage audit
        sampling("generate", gen_n, gen_n + n, gen_bytes, feats, rows_per_image(cfg)),
        fr_training("train_mix", mix_n, fr_ck * len(variants)),
        row(
            "evaluate",
            bench * models,
            flops=embed * bench * models,
            ram=bench * 3 * cfg.fr.input_size**2,
        ),  # fmt: skip
        row("report"),
    ]


def format_plan(
    cfg,
    size: DataSize,
    gpus=(1, 8),
    kind: str = "h100",
    util: float = DEFAULT_UTILISATION,
    cal=None,
) -> str:
    """The plan as a markdown table; ``cal`` (a ``calibrate.Calibration``) adds this
    machine's minutes per stage beside the GPU hours."""
    if kind not in GPU_PEAK:
        raise ValueError(f"unknown GPU kind {kind!r}; known: {', '.join(GPU_PEAK)}")
    if not 0 < util <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {util}")
    rows = stage_work(cfg, size)
    peak = GPU_PEAK[kind]
    head = "| stage | images | optimizer steps | denoiser evals | FLOPs | disk | host RAM |"
    head += "".join(f" hours on {k} x {kind} |" for k in gpus)
    head += " time here |" if cal is not None else ""
    lines = [
        f"Plan for {size.images:,} training images of {size.classes:,} identities "
        f"({size.source}); {kind}: {peak / 1e12:.0f} TFLOP/s dense bf16 at "
        f"{util:.0%} utilisation (assumed).",
        "",
        head,
        "|" + "---|" * (7 + len(gpus) + (cal is not None)),
    ]
    total = 0.0
    for r in rows:
        total += r["flops"]
        hours = [r["flops"] / (k * peak * util) / 3600 for k in gpus]
        lines.append(
            f"| {r['stage']} | {r['images']:,} | {r['steps']:,} | {r['evals']:,} | "
            f"{human(r['flops'])} | {human(r['disk'], 'B')} | {human(r['ram'], 'B')} |"
            + "".join(f" {h:.2f} |" for h in hours)
            + (_minutes_cell(r, cal) if cal is not None else "")
        )
    disk = sum(r["disk"] for r in rows)
    hours = [total / (k * peak * util) / 3600 for k in gpus]
    lines.append(
        f"| **total** | | | | {human(total)} | {human(disk, 'B')} | "
        f"{human(max(r['ram'] for r in rows), 'B')} (peak) |"
        + "".join(f" {h:.1f} |" for h in hours)
        + (_minutes_total(rows, cal) if cal is not None else "")
    )
    lines.append("")
    lines.append(
        "Hours assume every stage splits across the K GPUs (data and report run on rank 0 "
        "and cost minutes); evaluate splits by model. Disk counts PNG images at "
        f"~{PNG_RATIO:.0%} of raw and checkpoints kept; RAM is the largest in-memory table."
    )
    if cal is not None:
        lines.append(_calibration_note(cal))
    lines += mode_lines(cfg, size.classes, gpus, kind, peak, util)
    if not math.isfinite(total):
        raise ValueError("the plan overflowed; check the config")
    return "\n".join(lines)


def _minutes_cell(row: dict, cal) -> str:
    m = stage_minutes(row, cal)
    return " — |" if m is None else f" {_duration(60 * m)} |"


def _minutes_total(rows, cal) -> str:
    total = sum(m for m in (stage_minutes(r, cal) for r in rows) if m is not None)
    return f" {_duration(60 * total)} |"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.1f} h"


def _calibration_note(cal) -> str:
    rates = ", ".join(f"{k} {human(v, 'FLOP/s')}" for k, v in cal.rates.items())
    return (
        f"Time here: this stage's FLOPs at the rates measured on {cal.device} in "
        f"{cal.seconds:.1f} s (a generator step, an FR step, a sampler call and an embedding "
        f"call at this run's shapes; effective {rates}), one process; it leaves out start-up, "
        "checkpoints and decoding, and data and report, which are not FLOP-bound (—)."
    )
