"""The stage framework and the --set machinery, on toy stages (no models)."""

import json
from dataclasses import dataclass, field

import pytest

from auggen.infra.faults import ENV, SimulatedCrash, fault_point
from auggen.pipeline.driver import run_pipeline
from auggen.pipeline.overrides import all_keys, apply_set, from_dict, merge_dict, to_dict
from auggen.pipeline.stage import DONE, TIMING, Stage


@dataclass(frozen=True)
class A:
    n: int = 3
    scale: float = 1.0


@dataclass(frozen=True)
class B:
    values: tuple[float, ...] = (0.1, 0.2)
    name: str = "x"
    flag: bool = False
    limit: int | None = None


@dataclass(frozen=True)
class Toy:
    a: A = field(default_factory=A)
    b: B = field(default_factory=B)
    device: str = "cpu"


def _toy_registry(log):
    def first(cfg, in_dirs, out_dir, rt):
        log.append("first")
        done = sorted(out_dir.glob("part*.txt"))
        for k in range(len(done), cfg.a.n):
            (out_dir / f"part{k}.txt").write_text(str(k * cfg.a.scale))
            fault_point("first", k)
        (out_dir / "sum.txt").write_text(str(sum(k * cfg.a.scale for k in range(cfg.a.n))))

    def second(cfg, in_dirs, out_dir, rt):
        log.append("second")
        s = float((in_dirs["first"] / "sum.txt").read_text())
        (out_dir / "out.txt").write_text(f"{s}{cfg.b.name}")

    return {
        "first": Stage("first", first, (), ("a",)),
        "second": Stage("second", second, ("first",), ("b",)),
    }


def test_skip_resume_and_rerun(tmp_path, monkeypatch):
    log = []
    reg = _toy_registry(log)
    cfg = Toy()
    assert run_pipeline(cfg, tmp_path, reg, log=lambda s: None) == {"first": "ran", "second": "ran"}
    assert (tmp_path / "second" / "out.txt").read_text() == "3.0x"
    assert (tmp_path / "first" / DONE).exists() and (tmp_path / "first" / TIMING).exists()
    # Second run: everything skipped.
    assert set(run_pipeline(cfg, tmp_path, reg, log=lambda s: None).values()) == {"skipped"}
    assert log == ["first", "second"]
    # Changing the second stage's config reruns only it; the first one's reruns both.
    run_pipeline(apply_set(cfg, "b.name=y"), tmp_path, reg, log=lambda s: None)
    assert log[2:] == ["second"]
    cfg2 = apply_set(cfg, "a.n=5")
    monkeypatch.setenv(ENV, "first:2")
    with pytest.raises(SimulatedCrash):
        run_pipeline(cfg2, tmp_path, reg, log=lambda s: None)
    # The rerun works beside the finished result, which stays in place until it is done.
    assert (tmp_path / "first" / DONE).exists()
    pending = tmp_path / ".pending" / "first"
    assert not (pending / DONE).exists()
    assert len(list(pending.glob("part*.txt"))) == 3
    timing = json.loads((pending / TIMING).read_text())
    assert timing["status"] == "interrupted"
    monkeypatch.delenv(ENV)
    run_pipeline(cfg2, tmp_path, reg, log=lambda s: None)
    assert (tmp_path / "second" / "out.txt").read_text() == "10.0x"
    timing = json.loads((tmp_path / "first" / TIMING).read_text())
    assert timing["resumed"] is True and timing["attempts"] == 2
    assert timing["wall_s_all_attempts"] > timing["wall_s"]
    assert not pending.exists()
    # --force reruns a stage and, through its new token, the ones after it.
    n = len(log)
    run_pipeline(cfg2, tmp_path, reg, force=["first"], log=lambda s: None)
    assert log[n:] == ["first", "second"]


def test_stage_selection_errors(tmp_path):
    reg = _toy_registry([])
    with pytest.raises(RuntimeError, match=r"needs \['first'\]"):
        run_pipeline(Toy(), tmp_path, reg, stages=["second"], log=lambda s: None)
    with pytest.raises(ValueError, match="did you mean 'second'"):
        run_pipeline(Toy(), tmp_path, reg, stages=["secnd"], log=lambda s: None)
    run_pipeline(Toy(), tmp_path, reg, stages=["first"], log=lambda s: None)
    assert run_pipeline(Toy(), tmp_path, reg, stages=["second"], log=lambda s: None) == {
        "first": "not selected",
        "second": "ran",
    }
    # A changed upstream config makes the finished upstream stage unusable.
    with pytest.raises(RuntimeError, match="not finished with the current config"):
        run_pipeline(
            apply_set(Toy(), "a.n=4"), tmp_path, reg, stages=["second"], log=lambda s: None
        )


def test_overrides_types_and_errors():
    cfg = Toy()
    c = apply_set(cfg, "b.values=[0.5, 1]")
    assert c.b.values == (0.5, 1.0)
    assert apply_set(cfg, "b.values=0.3,0.4").b.values == (0.3, 0.4)
    # A shell leaves [/a.bin,/b.bin] unquoted: not JSON, still a list of its items.
    from auggen.pipeline.presets import PRESETS

    paths = apply_set(PRESETS["micro"], "data.verification_bins=[/data/lfw.bin,/data/cfp.bin]")
    assert paths.data.verification_bins == ("/data/lfw.bin", "/data/cfp.bin")
    assert apply_set(cfg, "b.flag=true").b.flag is True
    assert apply_set(cfg, "b.limit=7").b.limit == 7
    assert apply_set(c, "b.limit=null").b.limit is None
    assert apply_set(cfg, "b.name=2024").b.name == "2024"
    assert apply_set(cfg, "a.scale=2").a.scale == 2.0
    with pytest.raises(TypeError, match="a.n: expected an int, got 'abc'"):
        apply_set(cfg, "a.n=abc")
    with pytest.raises(TypeError, match="a.n: expected an int"):
        apply_set(cfg, "a.n=1.5")
    with pytest.raises(KeyError, match=r"unknown config key 'a.scal' \(did you mean 'a.scale'"):
        apply_set(cfg, "a.scal=1")
    with pytest.raises(KeyError, match="unknown config key 'c'"):
        apply_set(cfg, "c.x=1")
    with pytest.raises(ValueError, match="key=value"):
        apply_set(cfg, "a.n")
    d = to_dict(cfg)
    assert from_dict(Toy, d) == cfg
    assert merge_dict(cfg, {"a": {"n": 9}}).a == A(n=9)
    assert "b.values" in all_keys(cfg)


def test_fault_point(monkeypatch):
    fault_point("x", 1)
    monkeypatch.setenv(ENV, "x:1")
    with pytest.raises(SimulatedCrash, match="'x' after step 1"):
        fault_point("x", 1)


def test_failed_rerun_keeps_the_finished_result(tmp_path, monkeypatch):
    log = []
    reg = _toy_registry(log)
    run_pipeline(Toy(), tmp_path, reg, log=lambda s: None)
    token = (tmp_path / "first" / DONE).read_text()
    monkeypatch.setenv(ENV, "first:0")
    with pytest.raises(SimulatedCrash):
        run_pipeline(apply_set(Toy(), "a.n=6"), tmp_path, reg, log=lambda s: None)
    monkeypatch.delenv(ENV)
    assert (tmp_path / "first" / DONE).read_text() == token
    assert (tmp_path / "first" / "sum.txt").read_text() == "3.0"
    # Back to the old config: nothing reruns, the finished result never moved.
    status = run_pipeline(Toy(), tmp_path, reg, log=lambda s: None)
    assert status == {"first": "skipped", "second": "skipped"}
    # The new config resumes its pending rerun; the old result is kept for a switch back.
    run_pipeline(apply_set(Toy(), "a.n=6"), tmp_path, reg, log=lambda s: None)
    assert (tmp_path / "second" / "out.txt").read_text() == "15.0x"
    assert (tmp_path / ".replaced" / "first" / DONE).read_text() == token
    assert not (tmp_path / ".pending" / "first").exists()
    n = len(log)
    status = run_pipeline(Toy(), tmp_path, reg, log=lambda s: None)
    assert status == {"first": "restored", "second": "restored"}
    assert (tmp_path / "first" / DONE).read_text() == token
    assert (tmp_path / "second" / "out.txt").read_text() == "3.0x"
    assert log[n:] == []


def test_failed_force_keeps_the_finished_result(tmp_path, monkeypatch):
    log = []
    reg = _toy_registry(log)
    run_pipeline(Toy(), tmp_path, reg, log=lambda s: None)
    token = (tmp_path / "first" / DONE).read_text()
    monkeypatch.setenv(ENV, "first:1")
    with pytest.raises(SimulatedCrash):
        run_pipeline(Toy(), tmp_path, reg, force=["first"], log=lambda s: None)
    monkeypatch.delenv(ENV)
    assert (tmp_path / "first" / DONE).read_text() == token
    assert (tmp_path / "first" / "sum.txt").exists()
    # Without --force the finished result is used; the same --force command resumes.
    assert run_pipeline(Toy(), tmp_path, reg, log=lambda s: None)["first"] == "skipped"
    status = run_pipeline(Toy(), tmp_path, reg, force=["first"], log=lambda s: None)
    assert status == {"first": "ran", "second": "ran"}
    assert (tmp_path / "first" / DONE).read_text() != token
    assert not (tmp_path / ".pending").joinpath("first").exists()
    assert not (tmp_path / ".pending").joinpath("first.old").exists()


def test_a_swap_cut_between_its_renames_completes(tmp_path):
    reg = _toy_registry([])
    run_pipeline(Toy(), tmp_path, reg, log=lambda s: None)
    # What a kill between "finished -> .old" and "pending -> stage" leaves behind.
    pending = tmp_path / ".pending"
    pending.mkdir()
    (tmp_path / "first").rename(pending / "first")
    status = run_pipeline(Toy(), tmp_path, reg, log=lambda s: None)
    assert status == {"first": "skipped", "second": "skipped"}
    assert (tmp_path / "first" / DONE).exists() and not (pending / "first").exists()


def test_orl_quality_is_orl_tiny_with_more_seeds():
    """orl-quality must stay the study's config: orl-tiny's method and data, only the FR seeds
    (and the D_repro control left out) differ, so the measured gain carries over."""
    from auggen.pipeline.presets import PRESETS

    tiny, quality = to_dict(PRESETS["orl-tiny"]), to_dict(PRESETS["orl-quality"])
    assert quality["seeds"] == list(range(40)) and quality["train_mix"]["variants"] == ["aug"]
    for key in tiny:
        if key not in ("seeds", "train_mix"):
            assert quality[key] == tiny[key], key
