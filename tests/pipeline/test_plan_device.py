"""``--plan`` on this machine: the calibration's rates turn each stage's FLOPs into time."""

import math

import pytest

from auggen.cli.pipeline import main
from auggen.pipeline.calibrate import STAGE_KINDS, Calibration, calibrate, stage_minutes
from auggen.pipeline.plan import DataSize, format_plan, stage_work
from auggen.pipeline.presets import PRESETS

SIZE = DataSize(images=48, classes=6, source="test")


def test_minutes_are_flops_over_the_rate_of_their_kind():
    cal = Calibration("fake", {"gen_step": 1e9, "fr_step": 2e9, "sample": 4e9, "embed": 8e9}, 0)
    rows = stage_work(PRESETS["micro"], SIZE)
    for r in rows:
        m = stage_minutes(r, cal)
        if r["stage"] in ("data", "report"):
            assert m is None
            continue
        if r["stage"] == "train_gen":
            want = r["flops"] / 1e9
        elif r["stage"] in ("train_fr", "train_mix"):
            want = r["flops"] / 2e9
        elif r["stage"] == "evaluate":
            want = r["flops"] / 8e9
        else:  # sampling stages: the denoiser part and the embedding part at their rates
            assert r["sample_flops"] + r["embed_flops"] == pytest.approx(r["flops"])
            want = r["sample_flops"] / 4e9 + r["embed_flops"] / 8e9
        assert m == pytest.approx(want / 60)
    assert set(STAGE_KINDS) | {"data", "report"} == {r["stage"] for r in rows}


def test_calibration_measures_every_kind_at_the_runs_shapes():
    cal = calibrate(PRESETS["micro"], SIZE.classes, "cpu", threads=1)
    assert set(cal.rates) == {"gen_step", "fr_step", "sample", "embed"}
    assert all(math.isfinite(v) and v > 0 for v in cal.rates.values())
    assert "cpu, 1 thread" in cal.device and cal.seconds > 0
    text = format_plan(PRESETS["micro"], SIZE, cal=cal)
    assert "time here |" in text and "measured on cpu, 1 thread" in text
    rows = [line for line in text.splitlines() if line.startswith("| train_gen")]
    assert rows[0].rstrip().endswith(" s |")  # a duration, not an empty cell
    assert "time here" not in format_plan(PRESETS["micro"], SIZE)  # no calibration: as before


def test_plan_device_flag(capsys):
    argv = ["--preset", "micro", "--plan", "--plan-data", "48,6", "--threads", "1"]
    assert main([*argv, "--plan-device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "[plan] calibrating on cpu" in out and "| **total** |" in out and "time here" in out
    assert main([*argv, "--plan-device", "a100"]) == 0  # a GPU kind: priced, not measured
    out = capsys.readouterr().out
    assert "hours on 1 x a100" in out and "time here" not in out and "calibrating" not in out
    with pytest.raises(SystemExit):
        main([*argv, "--plan-device", "tpu"])
    assert "--plan-device must be cpu, cuda, cuda:N or a GPU kind" in capsys.readouterr().err
