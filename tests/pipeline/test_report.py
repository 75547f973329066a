"""Report verdicts (paired over seeds) and the training-health flags, on synthetic inputs."""

import json
import math
from types import SimpleNamespace

import numpy as np

from auggen.pipeline.stages.evaluate import summarize
from auggen.pipeline.stages.report import loss_curve_flags, results_table, training_health


def _rows(values: dict) -> list[dict]:
    """metrics.csv-like rows (strings, as read back) from {(model, seed): accuracy}."""
    return [
        {
            "model": m,
            "seed": str(s),
            "benchmark": "unseen_verif",
            "metric": "accuracy",
            "value": str(v),
        }
        for (m, s), v in values.items()
    ]


def _table(values, variants=("baseline", "aug")):
    rows = _rows(values)
    summary = summarize([dict(r, value=float(r["value"])) for r in rows])
    return results_table(summary, list(variants), rows)


def test_verdict_within_noise_is_no_clear_difference():
    # +1.75 points on average, but the two seeds disagree by 3.5 points.
    table, verdicts = _table(
        {("baseline", 0): 0.80, ("baseline", 1): 0.83, ("aug", 0): 0.80, ("aug", 1): 0.865}
    )
    assert "| D_orig + D_aug |" in table
    (line,) = verdicts
    assert line.startswith("- D_orig + D_aug vs D_orig on unseen_verif accuracy: +1.75 points")
    assert "95 % CI \u221220.49 … +23.99, 2 paired seeds): no clear difference" in line


def test_verdicts_better_worse_and_one_seed():
    base = {("baseline", s): 0.80 + 0.01 * s for s in range(3)}
    better = {("aug", s): 0.83 + 0.01 * s + 0.001 * (s == 1) for s in range(3)}
    _, (line,) = _table({**base, **better})
    # Differences 3.0, 3.1, 3.0 points: t(0.975, 2) = 4.303 x 0.0333 -> ± 0.14 points.
    assert line.endswith("+3.03 points (95 % CI +2.89 … +3.18, 3 paired seeds): better")
    worse = {("aug", s): 0.77 + 0.01 * s + 0.001 * (s == 1) for s in range(3)}
    _, (line,) = _table({**base, **worse})
    assert line.endswith(
        "\u22122.97 points (95 % CI \u22123.11 … \u22122.82, 3 paired seeds): worse"
    )
    _, (line,) = _table({("baseline", 0): 0.8, ("aug", 0): 0.9})
    assert line.endswith("+10.00 points (1 paired seed): no verdict possible from one seed")


def test_verdicts_pair_by_seed_only():
    # aug lacks seed 1 and has a seed 7 the baseline lacks: only seed 0 pairs up.
    _, (line,) = _table(
        {("baseline", 0): 0.8, ("baseline", 1): 0.2, ("aug", 0): 0.81, ("aug", 7): 0.1}
    )
    assert "+1.00 points (1 paired seed)" in line
    # Without per-seed rows there is a table but no verdict.
    table, verdicts = results_table(summarize([]), ["baseline", "aug"])
    assert verdicts == [] and table.startswith("| training data |")


def test_loss_curve_flags():
    rng = np.random.default_rng(0)
    healthy = (5 * np.exp(-np.arange(60) / 15) + 1 + 0.05 * rng.random(60)).tolist()
    assert loss_curve_flags(healthy) == []
    # EDM2-like: falls through zero, logged near it; small wiggles are not spikes.
    edm = (0.8 * np.exp(-np.arange(80) / 10) - 0.05 + 0.01 * rng.standard_normal(80)).tolist()
    assert loss_curve_flags(edm) == []
    (flag,) = loss_curve_flags(healthy[:20] + [math.nan] + healthy[20:] + [None])
    assert flag.startswith("2 non-finite loss value(s), the first at point 21")
    (flag,) = loss_curve_flags(healthy[::-1])
    assert flag.startswith("not decreasing: mean of the last 12 point(s)")
    (flag,) = loss_curve_flags(healthy[:30] + [40.0] + healthy[30:])
    assert flag.startswith("1 spike(s) above 10x the running median, the largest 40 at point 31")
    assert loss_curve_flags(healthy[:30] + [9.0] + healthy[30:]) == []  # < 10x the median
    (flag,) = loss_curve_flags(edm[:40] + [3.0] + edm[40:])
    assert "spike" in flag
    assert loss_curve_flags([]) == [] and loss_curve_flags([1.0]) == []
    assert loss_curve_flags([1.0, 1.5])[0].startswith("not decreasing")


def test_training_health_reads_every_history(tmp_path):
    cfg = SimpleNamespace(seeds=[0, 1], train_mix=SimpleNamespace(variants=["aug"]))
    gen = tmp_path / "train_gen" / "model"
    gen.mkdir(parents=True)
    (gen / "history.json").write_text(
        json.dumps([{"kimg": k, "loss": 1 / (k + 1)} for k in range(9)])
    )
    fr = {
        ("train_fr", "baseline", 0): [3.0, 2.0, 1.0],
        ("train_mix", "aug", 0): [2.0, float("nan")],
    }
    fr[("train_mix", "aug", 1)] = [1.0, 2.0, 3.0]
    for (stage, variant, seed), losses in fr.items():
        d = tmp_path / stage / variant / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "history.json").write_text(
            json.dumps([{"epoch": i, "loss": x} for i, x in enumerate(losses)])
        )
    (tmp_path / "train_fr" / "baseline" / "seed1").mkdir()
    (tmp_path / "train_fr" / "baseline" / "seed1" / "history.json").write_text("{not json")
    lines = training_health(cfg, tmp_path)
    assert lines[0] == "- generator: ok (9 points, loss 1 → 0.1111)"
    assert lines[1] == "- D_orig, seed 0: ok (3 points, loss 3 → 1)"
    assert lines[2] == "- D_orig, seed 1: **unusual**: unreadable history (JSONDecodeError)"
    assert lines[3].startswith("- D_orig + D_aug, seed 0: **unusual**: 1 non-finite loss value")
    assert lines[4].startswith("- D_orig + D_aug, seed 1: **unusual**: not decreasing")
    assert len(lines) == 5
    (tmp_path / "train_gen" / "model" / "history.json").unlink()
    assert training_health(cfg, tmp_path)[0].startswith("- generator: no training history found")
