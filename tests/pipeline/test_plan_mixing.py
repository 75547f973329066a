"""``--plan`` prices both mixing modes: ScoreMix drops the grid, its batch is k times larger."""

from dataclasses import replace

from auggen.pipeline.cost import denoiser_evals
from auggen.pipeline.plan import DataSize, format_plan, stage_work
from auggen.pipeline.plan_mixing import mode_costs
from auggen.pipeline.presets import PRESETS


def test_each_mode_costs_what_it_samples():
    cfg = PRESETS["micro"]
    cond, score = mode_costs(cfg, 10, g_flops=1.0)
    ev, gr, g = denoiser_evals(cfg), cfg.grid, cfg.generate
    assert cond["grid_rows"] == len(gr.alphas) * len(gr.betas) * gr.pairs * gr.samples_per_cell * ev
    assert score["grid_rows"] == 0 and score["grid_cells"] == 0
    assert score["generate_rows"] == g.sources * cond["generate_rows"]
    assert score["flops"] == score["generate_rows"]


def test_stage_work_of_a_score_mixing_config():
    cfg = PRESETS["micro"]
    score = replace(cfg, generate=replace(cfg.generate, mix="score", sources=3))
    size = DataSize(100, 10, "test")
    base = {r["stage"]: r for r in stage_work(cfg, size)}
    rows = {r["stage"]: r for r in stage_work(score, size)}
    assert rows["grid"]["images"] == 0 and rows["grid"]["evals"] == 0
    assert rows["generate"]["evals"] == 3 * base["generate"]["evals"]
    text = format_plan(score, size)
    assert "each mixing mode" in text and "This config uses `score`" in text
