"""The report's sections on how D_aug was mixed: the grid search (or why there was none), the
mixing method with its weights, and the pair rule with its distances (ScoreMix's check)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def _read(path: Path):
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


def _rate(x) -> str:
    return f"{x:.2f} images/s" if x else "n/a (resumed, nothing sampled in the last attempt)"


def grid_lines(cfg, root: Path, mixing: dict) -> list[str]:
    """The ``## Grid search`` section."""
    g = cfg.grid
    best, stats = _read(root / "grid" / "best.json"), _read(root / "grid" / "stats.json")
    lines = ["## Grid search", ""]
    if best is None:
        return lines + [
            "Skipped: D_aug was made by score mixing (`generate.mix=score`), whose convex "
            "weights need no (α, β) search (`generate.run_grid=true` runs it anyway).",
        ]
    used = (
        f"D_aug used alpha = {mixing['alpha']:g}, beta = {mixing['beta']:g} ({mixing['from']})"
        if mixing.get("alpha") is not None
        else f"D_aug did not use it ({mixing['from']})"
    )
    return lines + [
        f"Scale: {len(g.alphas)} x {len(g.betas)} grid (the paper: 11 x 11 over 0.1 ... 1.1), "
        f"{cfg.sample.num_steps} sampler steps (EDM2 default 32), generator trained for "
        f"{cfg.gen.steps} steps of {cfg.gen.batch_size} images.",
        "",
        f"alpha ∈ {list(g.alphas)}, beta ∈ {list(g.betas)} ({stats['cells']} cells), "
        f"{g.pairs} random pairs × {g.samples_per_cell} samples per cell, "
        f"{cfg.sample.num_steps} Heun steps. Best: **alpha* = {best['alpha']:g}, "
        f"beta* = {best['beta']:g}** (m_s = {best['m_s']:.3f}, m_d = {best['m_d']:.3f}, "
        f"m_total = {best['m_total']:.3f}). {used}. Grid sampling: "
        f"{_rate(stats.get('images_per_s'))}.",
        "",
        "![grid heatmaps](grid_heatmap.png)",
        "",
        "Pair 0 across the grid (rows: alpha; columns: the two sources, then beta):",
        "",
        "![grid preview](grid_preview.png)",
    ]


def method_lines(root: Path, out_dir: Path) -> list[str]:
    """The ``## Mixing method and pairs`` section (empty for runs from before it existed)."""
    mixing, pairs = _read(root / "generate" / "mixing.json"), _read(root / "generate/pairs.json")
    if pairs is None:
        return []
    mode = mixing.get("mix", "condition")
    if mode == "score":
        w = mixing["weights"]
        shown = f"weights {w}" if w and not isinstance(w[0], list) else "per-identity weights"
        how = (
            f"**score mixing** (ScoreMix): the denoiser outputs of the {mixing['sources']} "
            f"one-hot source conditions combined convexly along the trajectory, {shown} "
            "(`generate/manifest.csv` has each identity's)"
        )
    else:
        how = (
            f"**condition mixing** (AugGen): one condition α·c_i + β·c_j with α = "
            f"{mixing['alpha']:g}, β = {mixing['beta']:g} ({mixing['from']})"
        )
    corr = pairs["embed_vs_cond"]
    cap = pairs.get("max_uses_per_identity")
    rule = f"`{pairs['rule']}`" + (f", each identity used at most {cap} times" if cap else "")
    e, c = pairs["embed_distance"], pairs["cond_distance"]
    if (root / "generate" / "pair_distances.png").exists():
        shutil.copy(root / "generate" / "pair_distances.png", out_dir / "pair_distances.png")
    sampled = f", a sample of {corr['pairs']} of them" if corr["sampled"] else ""
    return [
        "## Mixing method and pairs",
        "",
        f"D_aug was made by {how}. Source classes: {rule}. Mean cosine distance of the "
        f"sources of each new identity: {e['mean']:.3f} between M_orig's class centroids "
        f"(range {e['min']:.3f} ... {e['max']:.3f}), {c['mean']:.3f} between G's class "
        "embeddings.",
        "",
        f"Spearman ρ between condition-space and embedding-space distances over the "
        f"{corr['all_pairs']} class pairs{sampled}: **{corr['spearman_rho']:.2f}** (ScoreMix "
        "found them largely uncorrelated, so G's condition space is no guide to which "
        "identities differ for the recogniser).",
        "",
        "![pair distances](pair_distances.png)",
        "",
    ]


def mix_label(row: dict) -> str:
    """A montage row's mixing weights: α, β (condition) or the convex weights (score)."""
    if row.get("mix") == "score":
        return "w = " + ", ".join(f"{float(v):g}" for v in str(row["weights"]).split(";"))
    return f"α = {float(row['alpha']):g}, β = {float(row['beta']):g}"
