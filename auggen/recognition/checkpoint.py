"""Atomic writes (temp file in the same folder, then os.replace) for checkpoints and weights."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from auggen.files import load_torch_weights


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_torch(obj, path: Path) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp))


def save_json(obj, path: Path) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    _atomic(path, write)


def save_text(text: str, path: Path) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    _atomic(path, write)


def save_run_checkpoint(path, cfg, model, optimizer, epoch, step, history, guard_state) -> None:
    """``train_fr``'s resume point: everything a resumed run needs to retrace the original."""
    save_torch(
        {
            "config": cfg.to_dict(),
            "epoch": epoch,
            "step": step,
            "history": history,
            "backbone": model.backbone.state_dict(),
            "head": model.head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "loss_guard": guard_state,  # auggen.training_guard.LossGuard's recent losses
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
