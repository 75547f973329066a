"""Stage framework: one folder per stage, ``config.json`` first, ``DONE`` last.

A stage's fingerprint hashes the config sections it reads plus the ``DONE`` tokens of the
stages it reads from. A rerun skips a stage whose ``DONE`` exists and whose fingerprint
matches; it resumes (same folder, the stage picks up its partial outputs) when the
fingerprint matches but ``DONE`` is missing; and it wipes and reruns the stage when the
fingerprint changed. A rerun of a stage writes a new token, so every stage after it reruns.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from auggen.infra import runtime
from auggen.infra.files import UnsafeOrCorruptFile, read_json, remove_temp_files
from auggen.infra.files import atomic_write_json as write_json
from auggen.pipeline.overrides import to_dict
from auggen.pipeline.store import FORMAT

CONFIG = "config.json"
DONE = "DONE"
TIMING = "timing.json"
HEARTBEAT_S = 10.0  # timing.json is rewritten this often while a stage runs


@dataclass(frozen=True)
class Stage:
    name: str
    # run(cfg, in_dirs: dict[str, Path], out_dir: Path, rt: Runtime) -> None; ``rt``: the job
    # (this rank, its device), set up once by the driver and handed down
    run: Callable
    needs: tuple[str, ...] = ()
    config_keys: tuple[str, ...] = ()  # top-level config sections the stage reads
    summary: str = ""
    # inputs(cfg) -> JSON-able fingerprint of files read from outside the run folder (None:
    # none with this config)
    inputs: Callable | None = None
    # Under torchrun: "all" ranks run ``run`` and split its work (auggen.infra.runtime.my_items),
    # or the "main" rank alone runs it while the others wait.
    ranks: str = "all"


def done_token(stage_dir: Path) -> str | None:
    p = Path(stage_dir) / DONE
    if not p.exists():
        return None
    return read_json(p)["token"]


def stage_config(stage: Stage, cfg) -> dict:
    return {k: _section(cfg, k) for k in stage.config_keys}


# Settings that change how fast a stage runs, never what it writes: not fingerprinted.
RUNTIME_KEYS = {
    "data": ("workers",),
    "fr": ("num_workers",),
    "gen": ("num_workers",),
    "sample": ("batch_size",),  # the images are the same in any batch (per-image seeds)
}


# Settings added later, left out of fingerprints at these values so that older runs keep
# theirs (data.unseen_auto only acts where its absence was an error). The values are what
# runs did before each key existed, not today's defaults: they stay as they are.
LATER_KEYS = {
    "data": {"unseen_auto": True},
    "generate": {  # ScoreMix and pair selection (stages/generate.py)
        "mix": "condition",
        "weights": [],
        "pairs": "random",
        "max_uses_per_identity": 0,
        "run_grid": False,
    },
}


# Sections whose "precision" may be "auto" (auggen.infra.runtime.precision_choice).
PRECISION_KEYS = ("gen", "sample")


def _section(cfg, key: str):
    value = getattr(cfg, key)
    if hasattr(value, "__dataclass_fields__"):
        d = to_dict(value)
        for k in RUNTIME_KEYS.get(key, ()):
            d.pop(k, None)
        for k, v in LATER_KEYS.get(key, {}).items():
            if d.get(k, v) == v:
                d.pop(k, None)
        if key in PRECISION_KEYS and d.get("precision") == "auto":
            # The precision "auto" resolves to here. Only bf16 is recorded: "auto" alone
            # means fp32, as it did on the CPU before, so fp32 stages keep their fingerprints.
            if runtime.use_bf16("auto", cfg.device):
                d["precision_used"] = "bf16"
        return d
    return json.loads(json.dumps(value))


def external_inputs(stage: Stage, cfg):
    """The fingerprint of the files ``stage`` reads from outside the run folder, or None."""
    return stage.inputs(cfg) if stage.inputs is not None else None


def fingerprint(stage: Stage, cfg, tokens: dict[str, str], external=None) -> str:
    """``external``: ``external_inputs(stage, cfg)`` when the caller has it already (a folder
    walk over a large dataset is worth doing once per run)."""

    fields = {"stage": stage.name, "config": stage_config(stage, cfg), "inputs": tokens}
    fields["format"] = FORMAT
    if stage.inputs is not None and external is None:
        external = stage.inputs(cfg)
    if external is not None:  # None: nothing read from outside (e.g. no pretrained model)
        fields["external"] = external
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_state(stage_dir: Path, fp: str) -> str:
    """'done' (finished with this fingerprint), 'partial' (resumable), 'stale' or 'absent'."""
    stage_dir = Path(stage_dir)
    if not stage_dir.exists() or not any(stage_dir.iterdir()):
        return "absent"
    cfg_path = stage_dir / CONFIG
    try:
        recorded = read_json(cfg_path).get("fingerprint") if cfg_path.exists() else None
    except (UnsafeOrCorruptFile, AttributeError):
        recorded = None  # a config.json that is not ours: the folder cannot be trusted
    if recorded != fp:
        return "stale"
    return "done" if (stage_dir / DONE).exists() else "partial"


class _Clock:
    """Keeps ``timing.json`` current while a stage runs, so a ``kill -9`` loses at most
    ``every`` seconds of the time the report adds up over attempts."""

    def __init__(self, path: Path, base: dict, previous: float, every: float | None = None):
        self.path, self.base, self.previous = path, base, previous
        self.every = HEARTBEAT_S if every is None else every
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the beat and the final write share timing.json.tmp
        self._final = False
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def wall(self) -> float:
        return time.perf_counter() - self.t0

    def write(self, status: str) -> float:
        with self._lock:
            wall = self.wall()
            if self._final:
                return wall
            self._final = status != "running"
            write_json(
                self.path,
                {
                    **self.base,
                    "status": status,
                    "wall_s": wall,
                    "wall_s_all_attempts": self.previous + wall,
                },
            )
            return wall

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.write("running")
            except OSError:  # a full disk must not kill the stage through its clock
                pass

    def __enter__(self) -> _Clock:
        self.write("running")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_stage(
    stage: Stage,
    cfg,
    in_dirs: dict[str, Path],
    out_dir: Path,
    fp: str,
    tokens: dict[str, str],
    rt: runtime.Runtime | None = None,
    log: Callable[[str], None] = print,
    external=None,
    ready: Callable[[], None] | None = None,
) -> float:
    """Run (or resume) one stage in ``out_dir`` and mark it DONE; returns wall seconds.

    On rank 0 of a torchrun job: ``ready()`` (the driver tells the other ranks to start) runs
    once the folder and ``config.json`` are in place; ``DONE`` is written only after every
    rank has finished its share (:func:`follow_stage` on the others). ``rt``: the job
    (default: one process on the CPU).
    """
    rt = rt or runtime.Runtime()
    out_dir = Path(out_dir)
    state = stage_state(out_dir, fp)
    if state == "stale":  # the driver keeps finished results elsewhere first
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous, attempts = 0.0, 0
    if state == "partial":
        removed = remove_temp_files(out_dir)
        if removed:
            log(f"[{stage.name}] removed {len(removed)} temporary file(s) of an interrupted write")
        if (out_dir / TIMING).exists():
            old = read_json(out_dir / TIMING)
            previous, attempts = old.get("wall_s_all_attempts", 0.0), old.get("attempts", 1)
    config = {
        "stage": stage.name,
        "fingerprint": fp,
        "inputs": tokens,
        "config": stage_config(stage, cfg),
    }
    if stage.inputs is not None:
        config["external_inputs"] = external if external is not None else stage.inputs(cfg)
    for key in set(stage.config_keys) & set(PRECISION_KEYS):  # not fingerprinted: the why
        section = getattr(cfg, key)
        config.setdefault("precision", {})[key] = runtime.precision_choice(
            section.precision, rt.device
        )[1]
    base = {
        "stage": stage.name,
        "device": str(rt.device),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "resumed": state == "partial",
        "attempts": attempts + 1,
        "processes": rt.world_size,
    }
    with _Clock(out_dir / TIMING, base, previous) as clock:
        try:  # config.json inside: an interrupt after it is always recorded
            write_json(out_dir / CONFIG, config)
            if ready is not None:
                ready()
            _run_share(stage, cfg, in_dirs, out_dir, rt)
        except BaseException:
            clock.write("interrupted")
            raise
        wall = clock.write("done")
    write_json(out_dir / DONE, {"token": uuid.uuid4().hex, "finished": time.time()})
    return wall


def _run_share(stage: Stage, cfg, in_dirs, out_dir: Path, rt: runtime.Runtime) -> None:
    """This rank's part of the stage, then wait until every rank has done its part."""
    if stage.ranks == "all" or rt.is_main:
        stage.run(cfg, in_dirs, out_dir, rt)
    runtime.barrier(f"end of stage {stage.name}", rt)


def follow_stage(stage: Stage, cfg, in_dirs, out_dir: Path, rt: runtime.Runtime) -> None:
    """A rank other than 0: its share of a stage that rank 0 prepared in ``out_dir``."""
    _run_share(stage, cfg, in_dirs, Path(out_dir), rt)
