"""Bad days: planted pickles, two runs on one folder, kills, changed inputs, leftovers."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from auggen.cli.pipeline import main
from auggen.infra.files import UnsafeOrCorruptFile, load_bundle, load_torch_weights, save_bundle
from auggen.pipeline.config import DataConfig
from auggen.pipeline.driver import run_pipeline
from auggen.pipeline.lock import RunFolderBusy, RunLock
from auggen.pipeline.presets import PRESETS
from auggen.pipeline.stage import TIMING, Stage
from auggen.pipeline.stages import STAGES
from tests.pipeline.test_bad_input import _folder

MICRO = replace(PRESETS["micro"], threads=1, progress=False)
ROOT = Path(__file__).resolve().parents[2]


def _quiet(msg):
    pass


class _Payload:
    """Unpickling this runs ``exec``: what a planted file would do to a careless reader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _plant(path: Path, marker: Path, kind: str) -> None:
    evil = {"images": _Payload(marker)}
    if kind == "torch":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil))


@pytest.mark.parametrize("kind", ["pickle", "torch"])
def test_readers_refuse_pickles_and_name_the_file(tmp_path, kind):
    marker = tmp_path / "marker"
    for name, reader in [("a.safetensors", load_bundle), ("b.pt", load_torch_weights)]:
        _plant(tmp_path / name, marker, kind)
        with pytest.raises(UnsafeOrCorruptFile, match=name):
            reader(tmp_path / name)
    assert not marker.exists()
    save_bundle({"x": torch.arange(3), "names": ["a", "b"], "n": 2}, tmp_path / "ok.safetensors")
    back = load_bundle(tmp_path / "ok.safetensors")
    assert torch.equal(back["x"], torch.arange(3)) and back["names"] == ["a", "b"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("safety") / "run"
    run_pipeline(MICRO, out, STAGES, log=_quiet)
    yield out
    torch.set_num_threads(threads)


FR0 = "train_fr/baseline/seed0"
# (file planted, stage that reads it, files removed so that the stage resumes and reads it;
# None: the stage is rerun with --force instead)
PLANTED = [
    ("data/images.safetensors", "train_fr", None),
    ("data/train.index.json", "train_fr", None),
    ("data/train.index.arrays.safetensors", "train_gen", None),
    ("data/bench_unseen_verif.safetensors", "evaluate", None),
    ("data/heldout.index.arrays.safetensors", "evaluate", None),
    ("data/benchmarks.json", "evaluate", None),
    ("repro/repro.index.json", "report", None),
    ("generate/aug.index.arrays.safetensors", "train_mix", None),
    ("repro/parts/part00000.json", "repro", ["repro/DONE"]),
    ("repro/parts/part00000.rec", "repro", ["repro/DONE"]),
    ("generate/shards/shard00000.json", "generate", ["generate/DONE"]),
    ("generate/shards/shard00000.rec", "report", None),
    ("grid/rows/row000.preview.safetensors", "grid", ["grid/DONE"]),
    ("grid/best.json", "generate", None),
    (f"{FR0}/model.safetensors", "evaluate", None),
    (f"{FR0}/config.json", "grid", None),
    (f"{FR0}/checkpoint.pt", "train_fr", ["train_fr/DONE", f"{FR0}/FINISHED"]),
    ("train_gen/model/checkpoint.json", "repro", None),
    ("train_gen/model/checkpoint-00000024.safetensors", "train_gen", ["train_gen/DONE"]),
]


@pytest.mark.parametrize("rel,stage,resume", PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_pickle_in_a_run_folder_never_runs(finished, tmp_path, rel, stage, resume):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    marker = tmp_path / "marker"
    assert (out / rel).exists()
    _plant(out / rel, marker, "torch" if rel.endswith((".safetensors", ".pt")) else "pickle")
    for gone in resume or []:
        (out / gone).unlink()
    force = [] if resume else [stage]
    with pytest.raises(Exception) as err:
        run_pipeline(MICRO, out, STAGES, stages=[stage], force=force, log=_quiet)
    assert not marker.exists()
    assert Path(rel).name in str(err.value)


def _hold_lock(folder: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import time
        from auggen.pipeline.lock import RunLock
        RunLock({str(folder)!r}).acquire()
        print("held", flush=True)
        time.sleep(120)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def _toy_registry(log):
    def first(cfg, in_dirs, out_dir, rt):
        log.append("first")
        (out_dir / "x.txt").write_text("x")

    return {"first": Stage("first", first, (), ())}


def test_second_run_on_a_folder_is_refused_and_kill_leaves_no_stale_lock(tmp_path, capsys):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(RunFolderBusy, match=f"pid {holder.pid}"):
            run_pipeline(MICRO, tmp_path, _toy_registry([]), log=_quiet)
        with pytest.raises(RunFolderBusy) as err:
            RunLock(tmp_path).acquire()
        assert str(tmp_path) in str(err.value) and f"pid {holder.pid}" in str(err.value)
        rc = main(["--preset", "micro", "--out", str(tmp_path), "--no-progress"])
        assert rc == 1 and f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    log = []
    assert run_pipeline(MICRO, tmp_path, _toy_registry(log), log=_quiet) == {"first": "ran"}
    assert log == ["first"]


def test_changed_inputs_rerun_the_data_stage(tmp_path):
    from auggen.data.verification_bin import write_verification_bin

    src = _folder(tmp_path / "faces", [3, 3, 3])
    bin_path = tmp_path / "lfw.bin"
    write_verification_bin(bin_path, torch.zeros(4, 3, 16, 16, dtype=torch.uint8), [True, False])
    d = DataConfig(
        source="folder",
        path=str(src),
        image_size=16,
        unseen_identities=0,
        heldout_per_identity=1,
        verification_bins=(str(bin_path),),
    )
    cfg = replace(MICRO, data=d)
    out = tmp_path / "run"

    def data_status():
        return run_pipeline(cfg, out, STAGES, stages=["data"], log=_quiet)["data"]

    assert data_status() == "ran"
    assert data_status() == "skipped"
    _folder(src, [3, 3, 3, 3])  # a new identity
    assert data_status() == "ran"
    assert json.loads((out / "data" / "split.json").read_text())["identities"] == 4
    (src / "id00" / "2.png").unlink()  # a deleted image
    assert data_status() == "ran"
    write_verification_bin(bin_path, torch.ones(4, 3, 16, 16, dtype=torch.uint8), [True, False])
    os.utime(bin_path, ns=(0, 0))  # even with an old mtime, the size/head change is seen
    assert data_status() == "ran"
    assert data_status() == "skipped"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_on_a_cpu_only_torch_fails_up_front(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--preset", "micro", "--out", str(tmp_path / "r"), "--device", "cuda"])
    assert "device 'cuda'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


KILLED_STAGE = """
import sys, time
from dataclasses import dataclass
from pathlib import Path
import auggen.pipeline.stage as stage_mod
from auggen.pipeline.driver import run_pipeline
stage_mod.HEARTBEAT_S = 0.1

@dataclass(frozen=True)
class Cfg:
    device: str = "cpu"

def slow(cfg, in_dirs, out_dir, rt):
    if len(sys.argv) > 2:
        (out_dir / ".checkpoint-00000001.safetensors.abc.tmp").write_bytes(b"half")
        print("started", flush=True)
        time.sleep(60)
    (out_dir / "result.txt").write_text("ok")

run_pipeline(Cfg(), Path(sys.argv[1]), {"slow": stage_mod.Stage("slow", slow)}, log=print)
"""


def test_kill_9_keeps_attempt_times_and_leftovers_are_removed(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_STAGE)
    out = tmp_path / "run"
    p = subprocess.Popen(
        [sys.executable, str(script), str(out), "hang"], stdout=subprocess.PIPE, text=True
    )
    while "started" not in p.stdout.readline():
        pass
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert list((out / "slow").glob("*.tmp"))
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True)
    timing = json.loads((out / "slow" / TIMING).read_text())
    assert timing["status"] == "done" and timing["attempts"] == 2
    assert timing["wall_s_all_attempts"] >= 0.8 + timing["wall_s"]
    assert not list((out / "slow").glob("*.tmp"))
    assert (out / "slow" / "result.txt").read_text() == "ok"
