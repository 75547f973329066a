"""``--plan``: per-stage work and FLOPs from the networks' own counts, without running."""

import pytest
import torch

from auggen.cli.pipeline import main
from auggen.pipeline.cost import forward_flops
from auggen.pipeline.plan import DataSize, format_plan, stage_work
from auggen.pipeline.presets import PRESETS


def test_flop_count_of_a_convolution_matches_the_formula():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert forward_flops(conv, torch.zeros(1, 3, 16, 16)) == 2 * 3 * 8 * 9 * 16 * 16


def test_stage_work_follows_the_config():
    cfg = PRESETS["micro"]
    size = DataSize(images=100, classes=10, source="test")
    rows = {r["stage"]: r for r in stage_work(cfg, size)}
    g, s = cfg.gen, cfg.sample
    assert rows["train_gen"]["images"] == g.steps * g.batch_size
    evals = 2 * s.num_steps - 1  # Heun
    assert rows["repro"]["images"] == 10 * cfg.repro.images_per_identity
    assert rows["repro"]["evals"] == rows["repro"]["images"] * evals
    # FLOPs are linear in the work: twice the identities, twice repro's FLOPs.
    double = {r["stage"]: r for r in stage_work(cfg, DataSize(100, 20, "test"))}
    assert double["repro"]["flops"] == pytest.approx(2 * rows["repro"]["flops"], rel=1e-3)
    assert rows["train_fr"]["flops"] > 0 and rows["data"]["flops"] == 0


def test_plan_prints_a_table_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--preset", "micro", "--out", str(out), "--plan", "--plan-gpus", "1,4"]
    argv += ["--plan-device", "h100"]  # priced only (the calibration: test_plan_device.py)
    assert main([*argv, "--plan-data", "5000,50"]) == 0
    text = capsys.readouterr().out
    assert "5,000 training images of 50 identities" in text
    assert "hours on 4 x h100" in text and "| **total** |" in text
    assert not out.exists()
    assert main(argv) == 0  # counted from the data the config names (ORL)
    assert "identities (ORL" in capsys.readouterr().out


def test_plan_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="unknown GPU kind 'tpu'"):
        format_plan(PRESETS["micro"], DataSize(10, 2, "t"), kind="tpu")
    with pytest.raises(SystemExit):
        main(["--preset", "micro", "--plan", "--plan-data", "lots"])
