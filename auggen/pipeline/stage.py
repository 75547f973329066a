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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from auggen.pipeline.overrides import to_dict

CONFIG = "config.json"
DONE = "DONE"
TIMING = "timing.json"


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable  # run(cfg, in_dirs: dict[str, Path], out_dir: Path) -> None
    needs: tuple[str, ...] = ()
    config_keys: tuple[str, ...] = ()  # top-level config sections the stage reads
    summary: str = ""


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def done_token(stage_dir: Path) -> str | None:
    p = Path(stage_dir) / DONE
    if not p.exists():
        return None
    return read_json(p)["token"]


def stage_config(stage: Stage, cfg) -> dict:
    return {k: _section(cfg, k) for k in stage.config_keys}


def _section(cfg, key: str):
    value = getattr(cfg, key)
    if hasattr(value, "__dataclass_fields__"):
        return to_dict(value)
    return json.loads(json.dumps(value))


def fingerprint(stage: Stage, cfg, tokens: dict[str, str]) -> str:
    blob = json.dumps(
        {"stage": stage.name, "config": stage_config(stage, cfg), "inputs": tokens},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_state(stage_dir: Path, fp: str) -> str:
    """'done' (finished with this fingerprint), 'partial' (resumable), 'stale' or 'absent'."""
    stage_dir = Path(stage_dir)
    if not stage_dir.exists() or not any(stage_dir.iterdir()):
        return "absent"
    cfg_path = stage_dir / CONFIG
    if not cfg_path.exists() or read_json(cfg_path).get("fingerprint") != fp:
        return "stale"
    return "done" if (stage_dir / DONE).exists() else "partial"


def run_stage(
    stage: Stage,
    cfg,
    in_dirs: dict[str, Path],
    out_dir: Path,
    fp: str,
    tokens: dict[str, str],
    device: str = "cpu",
) -> float:
    """Run (or resume) one stage in ``out_dir`` and mark it DONE; returns wall seconds."""
    out_dir = Path(out_dir)
    state = stage_state(out_dir, fp)
    if state == "stale":  # the driver sets finished results aside first
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = 0.0
    if state == "partial" and (out_dir / TIMING).exists():
        previous = read_json(out_dir / TIMING).get("wall_s_all_attempts", 0.0)
    write_json(
        out_dir / CONFIG,
        {
            "stage": stage.name,
            "fingerprint": fp,
            "inputs": tokens,
            "config": stage_config(stage, cfg),
        },
    )
    t0 = time.perf_counter()
    timing = {
        "stage": stage.name,
        "device": device,
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "resumed": state == "partial",
    }
    try:
        stage.run(cfg, in_dirs, out_dir)
    except BaseException:
        wall = time.perf_counter() - t0
        write_json(
            out_dir / TIMING,
            {
                **timing,
                "status": "interrupted",
                "wall_s": wall,
                "wall_s_all_attempts": previous + wall,
            },
        )
        raise
    wall = time.perf_counter() - t0
    write_json(
        out_dir / TIMING,
        {**timing, "status": "done", "wall_s": wall, "wall_s_all_attempts": previous + wall},
    )
    write_json(out_dir / DONE, {"token": uuid.uuid4().hex, "finished": time.time()})
    return wall
