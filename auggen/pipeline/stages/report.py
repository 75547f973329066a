"""Stage ``report``: report.md with the paper's table and the figures behind it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from auggen.pipeline.figures import montage, pyplot, save_figure, save_png
from auggen.pipeline.stages.common import fr_run_dir
from auggen.pipeline.stages.evaluate import MODEL_LABELS
from auggen.pipeline.store import load_images, read_csv

STAGE_ORDER = (
    "data",
    "train_gen",
    "train_fr",
    "repro",
    "grid",
    "generate",
    "train_mix",
    "evaluate",
    "report",
)


def _read(path: Path):
    return json.loads(Path(path).read_text())


def _rate(x) -> str:
    return f"{x:.2f} images/s" if x else "n/a (resumed, nothing sampled in the last attempt)"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def results_table(summary: list[dict], variants: list[str]) -> tuple[str, list[str]]:
    """Markdown table (models x benchmark metrics, mean ± std in %) and verdict lines."""
    cols = []
    for r in summary:
        key = (r["benchmark"], r["metric"])
        if r["metric"] != "accuracy_fold_std" and key not in cols:
            cols.append(key)
    cell = {(r["model"], r["benchmark"], r["metric"]): r for r in summary}
    head = "| training data | " + " | ".join(f"{b}: {m}" for b, m in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for v in variants:
        vals = []
        for b, m in cols:
            r = cell.get((v, b, m))
            vals.append(f"{_pct(r['mean'])} ± {_pct(r['std'])}" if r else "–")
        lines.append(f"| {MODEL_LABELS[v]} | " + " | ".join(vals) + " |")
    verdicts = []
    for v in variants[1:]:
        for b, m in cols:
            base, new = cell.get(("baseline", b, m)), cell.get((v, b, m))
            if not base or not new:
                continue
            delta = new["mean"] - base["mean"]
            noise = max(base["std"], new["std"])
            if delta == 0:
                word = "no change"
            elif min(base["seeds"], new["seeds"]) < 2:
                word = ("higher" if delta > 0 else "lower") + " (one seed: no noise estimate)"
            elif abs(delta) <= noise:
                word = "no clear change (within the seed std)"
            else:
                word = "better" if delta > 0 else "worse"
            verdicts.append(
                f"- {MODEL_LABELS[v]} vs D_orig on {b} {m}: {100 * delta:+.2f} points: {word}"
            )
    return "\n".join(lines), verdicts


def mixes_figure(root: Path, out: Path, n_examples: int, per: int) -> bool:
    """Each row: a real image of source i, generated images, a real image of source j."""
    gen_dir = root / "generate"
    if not (gen_dir / "aug.pt").exists():
        return False
    aug = load_images(gen_dir / "aug.pt")
    real = load_images(root / "data" / "train.pt")
    manifest = read_csv(gen_dir / "manifest.csv")
    from auggen.data import resize_images

    size = aug.images.shape[-1]
    rows, seen = [], []
    for r in manifest:
        lab = int(r["label"])
        if lab in seen:
            continue
        seen.append(lab)
        i, j = int(r["source_i"]), int(r["source_j"])
        src = resize_images(
            torch.stack([real.images[real.labels == i][0], real.images[real.labels == j][0]]), size
        )
        gen = aug.images[aug.labels == lab][:per]
        rows.append([src[0], *gen, src[1]])
        if len(rows) == n_examples:
            break
    save_png(montage(rows), out / "mixes.png", scale=2)
    return True


def repro_figure(root: Path, out: Path, n: int, per: int) -> bool:
    path = root / "repro" / "repro.pt"
    if not path.exists():
        return False
    rep = load_images(path)
    real = load_images(root / "data" / "train.pt")
    from auggen.data import resize_images

    rows = []
    for c in range(min(n, real.num_classes)):
        r = resize_images(real.images[real.labels == c][:2], rep.images.shape[-1])
        rows.append([*r, *rep.images[rep.labels == c][:per]])
    save_png(montage(rows), out / "repro.png", scale=2)
    return True


def curves_figure(cfg, root: Path, out: Path) -> bool:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    any_curve = False
    gen_hist = root / "train_gen" / "model" / "history.json"
    if gen_hist.exists():
        h = _read(gen_hist)
        axes[0].plot([e["kimg"] for e in h], [e["loss"] for e in h])
        any_curve = True
    axes[0].set_xlabel("kimg")
    axes[0].set_ylabel("EDM2 loss")
    axes[0].set_title("generator")
    runs = [("baseline", root / "train_fr")] + [
        (v, root / "train_mix") for v in cfg.train_mix.variants
    ]
    for v, (variant, stage_dir) in enumerate(runs):
        for k, seed in enumerate(cfg.seeds):
            p = fr_run_dir(stage_dir, variant, seed) / "history.json"
            if p.exists():
                h = _read(p)
                axes[1].plot(
                    [e["epoch"] for e in h],
                    [e["loss"] for e in h],
                    color=f"C{v}",
                    ls=("-", "--", ":", "-.")[k % 4],
                    label=f"{MODEL_LABELS[variant]} (seed {seed})",
                )
                any_curve = True
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("training loss (margin head)")
    axes[1].set_title("face recognition")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "curves.png")
    plt.close(fig)
    return any_curve


def timing_table(root: Path) -> str:
    lines = ["| stage | wall time (s) | all attempts (s) | device |", "|---|---:|---:|---|"]
    total = 0.0
    for s in STAGE_ORDER:
        p = root / s / "timing.json"
        if p.exists():
            t = _read(p)
            total += t["wall_s_all_attempts"]
            lines.append(
                f"| {s} | {t['wall_s']:.1f} | {t['wall_s_all_attempts']:.1f} | {t['device']} |"
            )
    lines.append(f"| total (before report) | | {total:.1f} | |")
    return "\n".join(lines)


def run(cfg, in_dirs, out_dir) -> None:
    root = Path(out_dir).parent
    split = _read(root / "data" / "split.json")
    summary = _read(root / "evaluate" / "summary.json")
    benches = _read(root / "evaluate" / "benchmarks.json")
    variants = ["baseline", *cfg.train_mix.variants]
    table, verdicts = results_table(summary, variants)
    best = _read(root / "grid" / "best.json")
    mixing = _read(root / "generate" / "mixing.json")
    leak = _read(root / "generate" / "leakage.json")
    grid_stats = _read(root / "grid" / "stats.json")
    for name in ("heatmap.png", "preview.png"):
        if (root / "grid" / name).exists():
            shutil.copy(root / "grid" / name, out_dir / f"grid_{name}")
    shutil.copy(root / "generate" / "leakage.png", out_dir / "leakage.png")
    mixes_figure(root, out_dir, cfg.report.mix_examples, cfg.report.images_per_example)
    repro_figure(root, out_dir, cfg.report.mix_examples, cfg.report.images_per_example)
    curves_figure(cfg, root, out_dir)
    g = cfg.grid
    lines = [
        "# AugGen run report",
        "",
        f"Data: {split['source']} — {split['train_identities']} training identities "
        f"({split['train_images']} images, stored at {split['image_size'][0]} px), "
        f"{split['unseen_identities']} unseen identities for verification, "
        f"{split['heldout_images']} held-out images for identification. "
        f"Generator {cfg.gen.preset} at {cfg.gen.resolution} px; FR {cfg.fr.backbone} "
        f"(width {cfg.fr.width}) + {cfg.fr.head} at {cfg.fr.input_size} px, "
        f"{cfg.fr.epochs} epochs; seeds {list(cfg.seeds)}; device {cfg.device}.",
        "",
        "## Results (mean ± std over FR seeds, %)",
        "",
        table,
        "",
        *verdicts,
        "",
        "Benchmarks:",
        *[f"- **{b['name']}**: {b.get('about', b['kind'])}" for b in benches],
        "",
        "These are the measured numbers of this run, whether or not AugGen helped here; "
        "with one or two seeds and a small test set the std is a rough guide only.",
        "",
        "## Grid search",
        "",
        f"Scale: {len(g.alphas)} x {len(g.betas)} grid (the paper: 11 x 11 over 0.1 ... 1.1), "
        f"{cfg.sample.num_steps} sampler steps (EDM2 default 32), generator trained for "
        f"{cfg.gen.steps} steps of {cfg.gen.batch_size} images.",
        "",
        f"alpha ∈ {list(g.alphas)}, beta ∈ {list(g.betas)} ({grid_stats['cells']} cells), "
        f"{g.pairs} random pairs × {g.samples_per_cell} samples per cell, "
        f"{cfg.sample.num_steps} Heun steps. Best: **alpha* = {best['alpha']:g}, "
        f"beta* = {best['beta']:g}** (m_s = {best['m_s']:.3f}, m_d = {best['m_d']:.3f}, "
        f"m_total = {best['m_total']:.3f}). D_aug used alpha = {mixing['alpha']:g}, "
        f"beta = {mixing['beta']:g} ({mixing['from']}). Grid sampling: "
        f"{_rate(grid_stats.get('images_per_s'))}.",
        "",
        "![grid heatmaps](grid_heatmap.png)",
        "",
        "Pair 0 across the grid (rows: alpha; columns: the two sources, then beta):",
        "",
        "![grid preview](grid_preview.png)",
        "",
        "## Mixed identities",
        "",
        f"{mixing['new_identities']} new identities × {mixing['images_per_identity']} images. "
        "Each row: a real image of source i, generated images of the new identity, a real "
        "image of source j.",
        "",
        "![mixes](mixes.png)",
        "",
        "D_repro (G with one-hot conditions): two real images, then reproductions.",
        "",
        "![repro](repro.png)",
        "",
        "## Training curves",
        "",
        "![curves](curves.png)",
        "",
        "## Leakage audit",
        "",
        f"Nearest real training image (M_orig cosine) of each of the "
        f"{leak['generated']['count']} generated images: mean {leak['generated']['mean']:.3f}, "
        f"median {leak['generated']['quantiles']['q50']:.3f}, max "
        f"{leak['generated']['quantiles']['q100']:.3f}. Near-copies (cos ≥ "
        f"{leak['threshold']:g}): **{leak['near_copies']}** "
        f"({100 * leak['near_copy_fraction']:.1f} %). The nearest real image belongs to one "
        f"of the two sources for {100 * leak['nearest_is_a_source_fraction']:.1f} % of them.",
    ]
    if "real_heldout_reference" in leak:
        r = leak["real_heldout_reference"]
        lines.append(
            f"For scale: real held-out photos of training identities reach mean "
            f"{r['mean']:.3f}, median {r['quantiles']['q50']:.3f}; "
            f"{100 * leak['closer_than_heldout_median_fraction']:.1f} % of the generated images "
            "are closer to a training image than that median."
        )
    lines += [
        "",
        "![leakage](leakage.png)",
        "",
        "## Stage times",
        "",
        timing_table(root),
        "",
        "Per-stage configs: `<stage>/config.json`; metrics: `evaluate/metrics.csv`; "
        "grid: `grid/grid.csv`; D_aug: `generate/manifest.csv`, `generate/images/`.",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
