"""benchmarks/gpu_check.py without a GPU: the CPU sections run, every row reaches the CSV and
markdown as it is made, a failing or overrunning section does not stop the next, and a kill
keeps every section finished before it."""

import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU this is the real check")


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(stem):
    with open(f"{stem}.csv", newline="") as f:
        return list(csv.DictReader(f))


def _status(rows):
    return {r["section"]: r["note"] for r in rows if r["name"] == "section status"}


def test_faster_backend_counts_paired_timings():
    _load()  # puts benchmarks/ on sys.path, imports _gpu_timing

    def r(name, variant, ms):
        return dict(section="ops", name=name, shape="2x8", dtype="bf16", variant=variant, ms_p50=ms)

    rows = [r("mp_silu fwd", "cuda", 1.0), r("mp_silu fwd", "triton", 2.0),
            r("mp_sum fwd", "cuda", 3.0), r("mp_sum fwd", "triton", 1.0),
            r("pixel_norm fwd", "cuda", 3.0), r("pixel_norm fwd", "triton", 1.0),
            r("copy", "clone", 0.1)]  # fmt: skip
    faster_backend = sys.modules["_gpu_timing"].faster_backend
    note = faster_backend(rows)
    assert "cuda faster in 1 of 3" in note and "AUGGEN_GPU_ORDER=triton,cuda" in note
    assert faster_backend(rows[:1] + rows[-1:]) is None  # nothing paired


def test_list_and_dry_run(capsys):
    mod = _load()
    assert mod.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("env", "build", "correctness", "ops", "attention", "sampler", "pipeline"):
        assert f"\n{name} " in listed
    assert mod.main(["--dry-run", "--budget-s", "300"]) == 0
    plan = capsys.readouterr().out
    assert "on a GPU: 7 sections in 300 s" in plan
    assert "pip install -q --no-build-isolation --no-deps -e" in plan
    assert "--preset micro" in plan and "sample.precision=bf16" in plan
    assert "2^31" in plan and "64x192x64x64" in plan
    budgets = [float(ln.split("budget")[1].split("s")[0]) for ln in plan.splitlines()
               if ln.startswith("  ") and "budget" in ln][:7]  # fmt: skip
    assert abs(sum(budgets) - 300) < 4  # the GPU plan's shares fill the budget


@no_gpu
def test_cpu_run_writes_each_section(tmp_path, one_thread):
    mod = _load()
    stem = tmp_path / "gpu_check"
    args = ["--quick", "--sections", "env,correctness,ops,attention", "--out", str(stem)]
    assert mod.main(args) == 0
    rows = _rows(stem)
    assert _status(rows) == {s: "ok" for s in ("env", "correctness", "ops", "attention")}
    names = {(r["section"], r["name"]) for r in rows}
    assert ("env", "auggen._C") in names and ("env", "backend report") in names
    assert ("correctness", "opcheck modulated_mp_silu") in names
    ops = [r for r in rows if r["section"] == "ops" and r["name"] == "mp_silu fwd"]
    assert {r["variant"] for r in ops} == {"eager", "cpu"}
    assert all(float(r["ms_p20"]) <= float(r["ms_p50"]) <= float(r["ms_p80"]) for r in ops)
    att = {r["variant"] for r in rows if r["section"] == "attention"}
    assert "mp_attention" in att and "sdpa math" in att
    md = Path(f"{stem}.md").read_text()
    assert md.startswith("# gpu_check on ") and "## attention (budget" in md


@no_gpu
def test_failing_section_is_recorded_and_the_next_runs(tmp_path, monkeypatch):
    mod = _load()
    monkeypatch.setenv(mod.FAIL_ENV, "env")
    stem = tmp_path / "gpu_check"
    assert mod.main(["--quick", "--sections", "env,attention", "--out", str(stem)]) == 1
    status = _status(_rows(stem))
    assert status["env"].startswith("failed: RuntimeError: AUGGEN_GPU_CHECK_FAIL names env")
    assert status["attention"] == "ok"


@no_gpu
def test_budget_stops_a_section_between_items(tmp_path):
    mod = _load()
    stem = tmp_path / "gpu_check"
    assert mod.main(["--quick", "--sections", "ops", "--budget-s", "5", "--out", str(stem)]) == 0
    rows = _rows(stem)
    assert any(r["name"] == "budget" and "not run" in r["note"] for r in rows)


def test_overrunning_section_times_out_and_the_next_runs(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _sections import Output, SectionSpec, run_sections

    def stuck(ctx):
        ctx.add(name="first row")
        while True:
            time.sleep(0.01)

    def quick(ctx):
        ctx.add(name="ran")

    specs = [SectionSpec("stuck", "never ends", 1, 1, stuck),  # a 0.1 s share of 10 s
             SectionSpec("next", "runs anyway", 99, 99, quick)]  # fmt: skip
    out = Output(tmp_path / "s", "test device")
    statuses = run_sections(specs, out, None, budget_s=10, gpu=False, grace_s=0.2)
    assert [s["note"].split(":")[0] for s in statuses] == ["timeout", "ok"]
    rows = _rows(tmp_path / "s")
    assert [r["name"] for r in rows] == ["first row", "section status", "ran", "section status"]
    assert all(r["device"] == "test device" for r in rows)


def test_reexec_after_build_continues_with_the_rest(monkeypatch, tmp_path):
    mod = _load()
    seen = []
    monkeypatch.setattr(mod.os, "execv", lambda exe, argv: seen.append(argv))
    args = mod.argparse.Namespace(out=tmp_path / "g", quick=False)
    mod.reexec(args, ["correctness", "ops"], 400.4)
    (argv,) = seen
    assert argv[1] == str(SCRIPT) and argv[argv.index("--sections") + 1] == "correctness,ops"
    assert argv[argv.index("--budget-s") + 1] == "400" and "--append" in argv


@no_gpu
def test_kill_keeps_the_sections_finished_before_it(tmp_path):
    stem = tmp_path / "gpu_check"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--sections", "env,attention,sampler",
           "--out", str(stem)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    csv_path = Path(f"{stem}.csv")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if csv_path.exists() and "attention,section status" in csv_path.read_text():
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # mid-way through the sampler section
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    status = _status(_rows(stem))
    assert status == {"env": "ok", "attention": "ok"}  # finished ones kept, sampler not done
    md = Path(f"{stem}.md").read_text()
    assert "## attention" in md and "## sampler" in md  # the sampler had started


def test_targets_met_counts_rows_of_the_whole_run(tmp_path):
    mod = _load()
    from _sections import Output

    out = Output(tmp_path / "g", "dev")
    for variant, ok in (("cuda", True), ("triton", False)):
        out.row(dict(section="ops", name="mp_sum fwd", shape="2x8", dtype="bfloat16",
                     variant=variant, target=">= 0.8", ok=ok))  # fmt: skip
    out.row(dict(section="attention", name="attention fwd", variant="mp_attention",
                 target="faster than sdpa flash", ok=True))  # fmt: skip
    out.row(dict(section="ops", name="copy", variant="clone"))  # no target
    lines = mod.targets_met(out.csv)
    assert lines == [
        "Target ops >= 0.8: met in 1 of 2; missed: mp_sum fwd 2x8 bfloat16 triton",
        "Target attention faster than: met in 1 of 1",
    ]
