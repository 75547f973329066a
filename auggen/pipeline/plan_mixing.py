"""``--plan``'s comparison of the two ways to make D_aug at the planned scale.

AugGen (``generate.mix=condition``) samples the (alpha, beta) grid (cells x pairs x samples
images) and then D_aug, one network row per image and evaluation. ScoreMix
(``generate.mix=score``) skips the grid, but each evaluation of a D_aug image runs the
network on its k source conditions: k rows (the per-step batch is k times larger).
"""

from __future__ import annotations

from auggen.pipeline.cost import denoiser_evals, generator_cost, human


def mode_costs(cfg, classes: int, g_flops: float | None = None) -> list[dict]:
    """One dict per mode: grid images, denoiser rows (grid, generate), FLOPs of both."""
    if g_flops is None:
        g_flops = generator_cost(cfg, classes)[0]
    ev = denoiser_evals(cfg)
    gr, g = cfg.grid, cfg.generate
    cells = len(gr.alphas) * len(gr.betas)
    grid_images = cells * gr.pairs * gr.samples_per_cell
    images = g.new_identities * g.images_per_identity
    out = []
    for mode, k, grid in (("condition", 1, grid_images), ("score", g.sources, 0)):
        grid_rows, gen_rows = grid * ev, images * ev * k
        out.append(
            {
                "mode": mode,
                "grid_cells": cells if grid else 0,
                "grid_rows": grid_rows,
                "generate_rows": gen_rows,
                "rows_per_image": ev * k,
                "flops": g_flops * (grid_rows + gen_rows),
            }
        )
    return out


def mode_lines(cfg, classes: int, gpus, kind: str, peak: float, util: float) -> list[str]:
    """Markdown: the cost of each mixing mode (the generator's part; embedding is alike)."""
    rows = mode_costs(cfg, classes)
    head = (
        "| generate.mix | grid cells | grid denoiser rows | D_aug denoiser rows | rows per image |"
    )
    head += " FLOPs |" + "".join(f" hours on {k} x {kind} |" for k in gpus)
    lines = ["", "Making D_aug, each mixing mode at this scale:", "", head]
    lines.append("|" + "---|" * (6 + len(gpus)))
    for r in rows:
        hours = [r["flops"] / (k * peak * util) / 3600 for k in gpus]
        lines.append(
            f"| {r['mode']} | {r['grid_cells']} | {r['grid_rows']:,} | {r['generate_rows']:,} | "
            f"{r['rows_per_image']} | {human(r['flops'])} |" + "".join(f" {h:.2f} |" for h in hours)
        )
    chosen = "score" if cfg.generate.mix == "score" else "condition"
    lines.append("")
    lines.append(
        f"This config uses `{chosen}`. ScoreMix drops the grid search but its per-step batch is "
        f"k = {cfg.generate.sources} times larger (one network call on k conditions per image)."
    )
    return lines
