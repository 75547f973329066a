"""The micro pipeline under ``torchrun --nproc_per_node 2`` (gloo on CPU).

One finished 1-process run is the reference: a 2-process run from scratch exits 0; a 2-process
run over a copy of its first stages writes the same repro/grid/generate outputs; a rank killed
inside ``generate`` or ``train_fr`` leaves the stage unfinished and the relaunch (on 1 or 2
processes) finishes with the same outputs; a hung rank is caught by the timeout.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from auggen.pipeline.stage import DONE
from auggen.pipeline.stages import STAGES

ARGS = ["--preset", "micro", "--threads", "1", "--no-progress"]
ARGS += ["--set", "fr.checkpoint_every_steps=2", "--set", "generate.write_recordio=true"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUGGEN_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[2]), **extra)
    return env


def pipeline(out, procs=1, extra=(), **env):
    """Run the CLI; returns (returncode, combined output)."""
    if procs == 1:
        cmd = [sys.executable, "-m", "auggen.pipeline"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node", str(procs), "-m", "auggen.pipeline"]
    cmd += [*ARGS, "--out", str(out), *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(**env), timeout=600)
    return p.returncode, p.stdout + p.stderr


def copy_stages(src, dst, names):
    dst.mkdir()
    for n in names:
        shutil.copytree(src / n, dst / n)


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    rc, log = pipeline(out)
    assert rc == 0, log
    return out


def _same_generated(a: Path, b: Path):
    for f in ("grid/grid.csv", "grid/best.json", "generate/manifest.csv", "generate/aug.rec"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    for folder, pattern in (("repro/parts", "*.rec"), ("generate/shards", "*.rec")):
        names = sorted(p.name for p in (a / folder).glob(pattern))
        assert names and names == sorted(p.name for p in (b / folder).glob(pattern))
        for n in names:
            assert (a / folder / n).read_bytes() == (b / folder / n).read_bytes(), n
    pngs = sorted(p.relative_to(a) for p in (a / "generate/images").rglob("*.png"))
    assert pngs == sorted(p.relative_to(b) for p in (b / "generate/images").rglob("*.png"))
    assert all((a / p).read_bytes() == (b / p).read_bytes() for p in pngs)


def test_whole_pipeline_on_two_processes(tmp_path):
    rc, log = pipeline(tmp_path / "run", procs=2)
    assert rc == 0, log
    for name in STAGES:
        assert (tmp_path / "run" / name / DONE).exists(), name
    timing = json.loads((tmp_path / "run/train_fr/timing.json").read_text())
    assert timing["processes"] == 2
    assert "[data] running on rank 0" in log and "[grid] running on 2 processes" in log
    assert log.count("done in") == 1  # rank 0 alone reports


def test_two_processes_generate_what_one_does(one, tmp_path):
    out = tmp_path / "run"
    copy_stages(one, out, ["data", "train_gen", "train_fr"])
    rc, log = pipeline(out, procs=2)
    assert rc == 0, log
    for name in ("data", "train_gen", "train_fr"):
        assert f"[{name}] done already, skipped" in log  # no process count in a fingerprint
    _same_generated(one, out)


def test_rank_killed_in_generate_resumes_on_one_process(one, tmp_path):
    out = tmp_path / "run"
    copy_stages(one, out, ["data", "train_gen", "train_fr", "repro", "grid"])
    # Shard 1 belongs to rank 1, which is SIGKILLed once it has written it.
    rc, log = pipeline(out, procs=2, AUGGEN_FAIL_AT="generate:1:1", AUGGEN_FAULT="kill")
    assert rc != 0, log
    assert not (out / "generate" / DONE).exists()
    assert (out / "generate/shards/shard00001.json").exists()
    rc, log = pipeline(out)  # relaunched on another number of processes
    assert rc == 0, log
    assert "[generate] resuming" in log and "[grid] done already" in log
    _same_generated(one, out)
    assert json.loads((out / "generate/timing.json").read_text())["attempts"] == 2


def test_rank_killed_in_train_fr_resumes_from_its_checkpoint(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    rc, log = pipeline(a, procs=2, extra=["--stages", "data,train_fr"])  # uninterrupted
    assert rc == 0, log
    rc, log = pipeline(
        b,
        procs=2,
        extra=["--stages", "data,train_fr"],
        AUGGEN_FAIL_AT="train_fr.step:2:1",
        AUGGEN_FAULT="kill",
    )
    assert rc != 0, log
    run = b / "train_fr/baseline/seed0"
    assert (run / "checkpoint.pt").exists() and not (b / "train_fr" / DONE).exists()
    rc, log = pipeline(b, procs=2, extra=["--stages", "data,train_fr"])
    assert rc == 0, log
    assert "[train_fr] resuming" in log
    want = load_file(a / "train_fr/baseline/seed0/model.safetensors")
    got = load_file(run / "model.safetensors")
    assert want.keys() == got.keys()
    for k in want:
        assert (want[k] - got[k]).abs().max() <= 1e-6, k


def test_hung_rank_is_caught_by_the_timeout(one, tmp_path):
    out = tmp_path / "run"
    copy_stages(one, out, ["data", "train_gen", "train_fr", "repro", "grid"])
    rc, log = pipeline(
        out,
        procs=2,
        extra=["--set", "dist_timeout_s=10"],
        AUGGEN_FAIL_AT="generate:1:1",
        AUGGEN_FAULT="hang",
    )
    assert rc != 0
    assert "RankTimeout" in log and "another rank died or hangs" in log, log
    assert "generate: every rank's shards written" in log
    assert not (out / "generate" / DONE).exists()
    timing = json.loads((out / "generate/timing.json").read_text())
    assert timing["status"] == "interrupted"


def test_fr_checkpoint_of_two_ranks_resumes_on_one(tmp_path):
    out = tmp_path / "run"
    env = dict(AUGGEN_FAIL_AT="train_fr.step:2:1", AUGGEN_FAULT="kill")
    rc, log = pipeline(out, procs=2, extra=["--stages", "data,train_fr"], **env)
    assert rc != 0, log
    rc, log = pipeline(out, extra=["--stages", "data,train_fr"])
    assert rc == 0 and "[train_fr] resuming" in log, log
    history = (out / "train_fr/baseline/seed0/history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header + the micro preset's 2 epochs, none repeated


def test_a_rank_that_cannot_see_the_run_folder_is_refused(tmp_path):
    from auggen.infra.runtime import Runtime
    from auggen.pipeline.driver import _check_shared

    rt = Runtime(1, 2)  # rank 1 of 2
    (tmp_path / ".lock").write_text('{"pid": 1}')
    _check_shared(tmp_path, '{"pid": 1}', rt)
    with pytest.raises(RuntimeError, match="--out must be a folder every node sees"):
        _check_shared(tmp_path, '{"pid": 2}', rt)  # another node's disk: an old lock file
    with pytest.raises(RuntimeError, match="rank 1 on .* does not see"):
        _check_shared(tmp_path / "elsewhere", '{"pid": 1}', rt)
