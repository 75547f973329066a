"""FR run files: checkpoint, weights, config and history, each written atomically
(``auggen.infra.files.atomic_path``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from auggen.infra.files import (
    atomic_path,
    atomic_save_tensors,
    atomic_write_bytes,
    load_torch_weights,
)


def save_torch(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    atomic_save_tensors(path, state_dict)


def save_json(obj, path: Path) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2).encode())


def save_text(text: str, path: Path) -> None:
    atomic_write_bytes(path, text.encode())


def write_history(out: Path, history: list[dict]) -> None:
    """Per-epoch history as history.json and history.csv."""
    save_json(history, out / "history.json")
    keys = list(history[0]) if history else []
    lines = [",".join(keys)] + [",".join(str(h[k]) for k in keys) for h in history]
    save_text("\n".join(lines) + "\n", out / "history.csv")


def save_run_checkpoint(
    path, cfg, model, optimizer, epoch, step, history, guard_state, partial=None
) -> None:
    """``train_fr``'s resume point: everything a resumed run needs to retrace the original.

    ``epoch``: epochs completed. Inside an epoch ``partial`` holds that epoch's running
    ``totals`` (loss sum, correct, samples over all ranks) and ``seconds``, so its history
    entry comes out as if the run had not stopped; ``None`` at an epoch end.
    """
    save_torch(
        {
            "config": cfg.to_dict(),
            "epoch": epoch,
            "step": step,
            "partial": partial,
            "history": history,
            "backbone": model.backbone.state_dict(),
            "head": model.head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "loss_guard": guard_state,  # auggen.infra.training_guard.LossGuard's recent losses
        },
        path,
    )


def load_run_checkpoint(path: Path, cfg, device, resumable: set[str]) -> dict | None:
    """The checkpoint at ``path`` (None if absent); refused when ``cfg`` differs from the
    config that wrote it in any field outside ``resumable``."""
    if not path.exists():
        return None
    ckpt = load_torch_weights(path, map_location=device)
    old, new = ckpt["config"], cfg.to_dict()
    diff = sorted(k for k in set(old) | set(new) if k not in resumable and old.get(k) != new.get(k))
    if diff:
        raise ValueError(
            f"{path} was written by a run with a different config (fields {diff}); "
            "use a fresh out_dir or the same config"
        )
    return ckpt


def resume_point(ckpt: dict, steps: int, path) -> tuple[int, dict | None]:
    """(step inside the epoch to resume at, that epoch's partial totals) of a checkpoint."""
    partial = ckpt.get("partial")
    if partial is None:
        return 0, None  # an epoch end (or a checkpoint from before mid-epoch ones)
    first = int(ckpt["step"]) - int(ckpt["epoch"]) * steps
    if not 0 < first < steps:
        raise ValueError(
            f"{path} was written at step {ckpt['step']} inside epoch {ckpt['epoch'] + 1}, "
            f"which does not fit epochs of {steps} steps: the data, batch_size or world size "
            "changed since; resume with the same ones or use a fresh out_dir"
        )
    return first, partial


def checkpoint_label(path, epoch: int, partial) -> str:
    """How a checkpoint is named in the loss guard's message."""
    if partial is None:
        return f"{path} (epoch {epoch})"
    return f"{path} (inside epoch {epoch + 1})"
