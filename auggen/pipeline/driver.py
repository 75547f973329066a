"""Run the stages in order, skipping finished ones and resuming an interrupted one."""

from __future__ import annotations

import dataclasses
import difflib
import os
import shutil
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from auggen.infra import runtime
from auggen.pipeline.lock import LOCK, RunLock
from auggen.pipeline.stage import (
    DONE,
    Stage,
    done_token,
    external_inputs,
    fingerprint,
    follow_stage,
    run_stage,
    stage_state,
)

BACKUP = ".replaced"  # finished results of another config, restored if it comes back
PENDING = ".pending"  # a rerun over a finished result runs here and is swapped in when done


def _swap(out_dir: Path, backup: Path) -> None:
    """Put the set-aside finished result back in place (the current one, if finished, aside)."""
    tmp = backup.with_name(backup.name + ".swap")
    if out_dir.exists():
        os.replace(out_dir, tmp)
    os.replace(backup, out_dir)
    if tmp.exists():
        if (tmp / DONE).exists():
            os.replace(tmp, backup)
        else:
            shutil.rmtree(tmp)


def check_stage_names(names: Sequence[str], registry: dict[str, Stage], what: str) -> list[str]:
    out = []
    for n in names:
        if n not in registry:
            close = difflib.get_close_matches(n, list(registry), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown {what} {n!r}{hint}; valid: {', '.join(registry)}")
        out.append(n)
    return out


def run_pipeline(
    cfg,
    out_root,
    registry: dict[str, Stage],
    stages: Sequence[str] | None = None,
    force: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run ``stages`` (default: all, in registry order) under ``out_root/<stage>``.

    Returns {stage: 'ran' | 'skipped' | 'restored' | 'not selected'}. A stage outside
    ``stages`` that a selected stage reads from must already be finished with the current
    config. The run holds ``out_root``'s lock throughout (a second run on it is refused).

    A finished result is never deleted before its replacement is finished: a rerun over one
    (config changed, or ``--force``) runs in ``.pending/<stage>`` and is swapped in when it
    is done; a killed or failing rerun leaves the finished result in place, and the same
    command resumes the pending one. The result of a different config waits in
    ``.replaced/<stage>``, so going back to that config restores it without rerunning.
    """
    selected = set(check_stage_names(stages, registry, "stage") if stages else registry)
    forced = set(check_stage_names(force, registry, "--force stage"))
    selected |= forced
    if hasattr(cfg, "validate"):
        cfg.validate()
    out_root = Path(out_root)
    rt = runtime.setup(getattr(cfg, "device", "cpu"), getattr(cfg, "dist_timeout_s", None))
    try:
        cfg = _for_this_rank(cfg, rt)
        if getattr(cfg, "threads", 0):
            torch.set_num_threads(cfg.threads)
        if not rt.is_main:
            return _follow(cfg, out_root, registry, rt)
        leader = _Leader(rt)
        try:
            with RunLock(out_root):
                # Every rank must see rank 0's files (multi-node: --out on a shared filesystem).
                leader.send({"action": "hello", "lock": (out_root / LOCK).read_text()})
                status = _run_locked(cfg, out_root, registry, selected, forced, log, leader)
        except BaseException as e:
            leader.stop(e)
            raise
        leader.send({"action": "end", "status": status})
        return status
    finally:
        runtime.cleanup(rt)


def _for_this_rank(cfg, rt: runtime.Runtime):
    """Progress bars on rank 0 only. (The device stays as configured: this rank's, e.g.
    ``cuda:LOCAL_RANK``, is ``rt.device``, handed to every stage.)"""
    if rt.is_main or "progress" not in getattr(cfg, "__dataclass_fields__", {}):
        return cfg
    return dataclasses.replace(cfg, progress=False)


class _Leader:
    """Rank 0's side of the conversation: it decides, the other ranks follow.

    Between stages the other ranks wait for rank 0's next message ("run stage X in folder
    Y", "end", or "stop"). Inside a stage every rank runs its share and meets the others
    at the stage's closing barrier, so nothing is sent while they are busy.
    """

    def __init__(self, rt: runtime.Runtime):
        self.rt, self.listening = rt, True

    def send(self, msg: dict) -> None:
        if self.rt.enabled:
            runtime.broadcast_object(msg, "rank 0's next decision", self.rt)

    def run(self, name: str, work: Path) -> None:
        self.send({"action": "run", "stage": name, "work": str(work)})
        self.listening = False

    def stage_finished(self) -> None:
        self.listening = True

    def stop(self, e: BaseException) -> None:
        """Tell waiting ranks why rank 0 stops (busy ones are stopped by torchrun or time
        out: a message they are not waiting for would pair with the wrong collective)."""
        if self.rt.enabled and self.listening:
            try:
                self.send({"action": "stop", "reason": f"{type(e).__name__}: {e}"})
            except runtime.RankTimeout:
                pass


def _follow(cfg, out_root: Path, registry, rt: runtime.Runtime) -> dict[str, str]:
    """Ranks other than 0: run each stage rank 0 starts, until it ends the run."""
    while True:
        msg = runtime.broadcast_object(None, "rank 0's next decision", rt)
        if msg["action"] == "end":
            return msg["status"]
        if msg["action"] == "stop":
            raise RuntimeError(f"rank 0 stopped the run: {msg['reason']}")
        if msg["action"] == "hello":
            _check_shared(out_root, msg["lock"], rt)
            continue
        stage = registry[msg["stage"]]
        in_dirs = {d: out_root / d for d in stage.needs}
        follow_stage(stage, cfg, in_dirs, Path(msg["work"]), rt)


def _check_shared(out_root: Path, lock_text: str, rt: runtime.Runtime) -> None:
    """This rank sees the lock file rank 0 just wrote, or the run folder is not shared."""

    path = out_root / LOCK
    seen = path.read_text() if path.exists() else None
    if seen != lock_text:
        raise RuntimeError(
            f"rank {rt.rank} on {socket.gethostname()} does not see {path} as rank 0 wrote it: "
            "--out must be a folder every node sees (a shared filesystem such as NFS or "
            "Lustre), at the same path"
        )


def _backend_line() -> str:
    """``auggen.ops`` backend choices and self-test verdicts, once a stage has used the ops."""
    ops = sys.modules.get("auggen.ops")  # only if a stage imported them
    return ops.backend_line() if ops is not None and ops.backend_choices() else ""


def _run_locked(cfg, out_root: Path, registry, selected, forced, log, leader) -> dict[str, str]:
    current: dict[str, bool] = {}
    status: dict[str, str] = {}
    shown: dict[str, str] = {}
    for name, stage in registry.items():
        out_dir = out_root / name
        missing = [d for d in stage.needs if not current.get(d)]
        if name not in selected:
            status[name] = "not selected"
            if not missing:
                tokens = {d: done_token(out_root / d) for d in stage.needs}
                fp = fingerprint(stage, cfg, tokens)
                current[name] = stage_state(out_dir, fp) == "done"
            continue
        if missing:
            raise RuntimeError(
                f"stage {name!r} needs {missing}, not finished with the current config; "
                f"run them first (add them to --stages)"
            )
        tokens = {d: done_token(out_root / d) for d in stage.needs}
        external = external_inputs(stage, cfg)
        fp = fingerprint(stage, cfg, tokens, external)
        backup = out_root / BACKUP / name
        pending = out_root / PENDING / name
        _recover_swap(out_dir, pending, fp)
        state = stage_state(out_dir, fp)
        is_forced = name in forced
        if not is_forced and state in ("stale", "absent") and stage_state(backup, fp) == "done":
            _swap(out_dir, backup)
            log(f"[{name}] restored the finished result of this config from {backup}")
            status[name] = "restored"
        elif not is_forced and state == "done":
            if pending.exists():
                log(f"[{name}] an unfinished rerun waits in {pending} (resumed when rerun again)")
            log(f"[{name}] done already, skipped ({out_dir})")
            status[name] = "skipped"
        else:
            keep_finished = (out_dir / DONE).exists()
            work = pending if keep_finished else out_dir
            if not keep_finished and state in ("stale", "absent") and out_dir.exists():
                shutil.rmtree(out_dir)  # an unfinished attempt of another config
            if is_forced and not keep_finished and state == "partial":
                shutil.rmtree(out_dir)  # --force: start over, nothing finished to keep
            verb = "forced, rerunning" if is_forced else "config changed, rerunning"
            if not keep_finished:
                verb = "resuming" if stage_state(work, fp) == "partial" else "running"
            elif stage_state(work, fp) == "partial":
                verb += " (resuming the pending rerun)"
            ranks = ""
            if leader.rt.enabled:
                ranks = f" on {leader.rt.world_size} processes" if stage.ranks == "all" else ""
                ranks = ranks or " on rank 0 (the others wait)"
            log(f"[{name}] {verb}{ranks}: {stage.summary or name}")
            in_dirs = {d: out_root / d for d in stage.needs}
            wall = run_stage(
                stage,
                cfg,
                in_dirs,
                work,
                fp,
                tokens,
                rt=leader.rt,
                log=log,
                external=external,
                ready=lambda: leader.run(name, work),  # noqa: B023  (called inside this turn)
            )
            leader.stage_finished()
            if keep_finished:
                _replace_finished(out_dir, work, backup, keep_old=state == "stale")
            log(f"[{name}] finished in {wall:.1f} s")
            backends = _backend_line()
            if backends and backends != shown.get("backends"):
                log(f"[{name}] {backends}")  # what served the fused ops, once per change
                shown["backends"] = backends
            status[name] = "ran"
        current[name] = True
    return status


def _recover_swap(out_dir: Path, pending: Path, fp: str) -> None:
    """Finish a swap that a kill interrupted between its two renames."""
    old = pending.with_name(pending.name + ".old")
    if not out_dir.exists() and stage_state(pending, fp) == "done":
        os.replace(pending, out_dir)
    if old.exists() and out_dir.exists():
        shutil.rmtree(old)


def _replace_finished(out_dir: Path, new: Path, backup: Path, keep_old: bool) -> None:
    """Swap the finished rerun ``new`` into ``out_dir``; the old result goes to ``backup``
    (another config: kept for a switch back) or is deleted (same config, ``--force``)."""
    old = backup if keep_old else new.with_name(new.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    old.parent.mkdir(parents=True, exist_ok=True)
    os.replace(out_dir, old)
    os.replace(new, out_dir)
    if not keep_old:
        shutil.rmtree(old)
