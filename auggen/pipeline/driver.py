"""Run the stages in order, skipping finished ones and resuming an interrupted one."""

from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from auggen.pipeline.stage import DONE, Stage, done_token, fingerprint, run_stage, stage_state

BACKUP = ".replaced"  # a finished stage whose config changed waits here until its rerun ends


def _set_aside(out_dir: Path, backup: Path) -> None:
    """Before a rerun: keep a finished result until the rerun succeeds; drop a partial one."""
    if (out_dir / DONE).exists():
        if backup.exists():
            shutil.rmtree(backup)
        backup.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out_dir, backup)
    else:
        shutil.rmtree(out_dir)


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
    config. A finished stage whose config changed is set aside (``.replaced/<stage>``) and
    dropped only when its rerun finishes, so a failing rerun loses nothing finished; going
    back to the old config restores it without rerunning.
    """
    selected = set(check_stage_names(stages, registry, "stage") if stages else registry)
    forced = set(check_stage_names(force, registry, "--force stage"))
    selected |= forced
    if hasattr(cfg, "validate"):
        cfg.validate()
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    device = getattr(cfg, "device", "cpu")
    if getattr(cfg, "threads", 0):
        import torch

        torch.set_num_threads(cfg.threads)
    current: dict[str, bool] = {}
    status: dict[str, str] = {}
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
        fp = fingerprint(stage, cfg, tokens)
        backup = out_root / BACKUP / name
        if name in forced and out_dir.exists():
            shutil.rmtree(out_dir)
        state = stage_state(out_dir, fp)
        if state in ("stale", "absent") and stage_state(backup, fp) == "done":
            _swap(out_dir, backup)
            log(f"[{name}] restored the finished result of this config from {backup}")
            status[name] = "restored"
        elif state == "done":
            log(f"[{name}] done already, skipped ({out_dir})")
            status[name] = "skipped"
        else:
            if state == "stale":
                _set_aside(out_dir, backup)
            verb = {"partial": "resuming", "stale": "config changed, rerunning"}.get(
                state, "running"
            )
            log(f"[{name}] {verb}: {stage.summary or name}")
            wall = run_stage(
                stage,
                cfg,
                {d: out_root / d for d in stage.needs},
                out_dir,
                fp,
                tokens,
                device=device,
            )
            if backup.exists():
                shutil.rmtree(backup)
            log(f"[{name}] finished in {wall:.1f} s")
            status[name] = "ran"
        current[name] = True
    return status
