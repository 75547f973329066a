"""Generator checkpoints: tensors in safetensors, everything else in JSON, both written atomically.

``checkpoint.json`` (written last) names the newest ``checkpoint-<step>.safetensors``; a run
killed between the two writes resumes from the previous, still complete, pair.
"""

from __future__ import annotations

from pathlib import Path

import torch

from auggen.infra.files import atomic_save_tensors, atomic_write_json, load_safetensors, read_json

STATE_JSON = "checkpoint.json"


def split_optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Adam's state dict as (tensors for safetensors, JSON-able rest)."""
    sd = opt.state_dict()
    tensors, state_meta = {}, {}
    for pid, st in sd["state"].items():
        meta = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                meta[k] = v
        state_meta[str(pid)] = meta
    return tensors, {"param_groups": sd["param_groups"], "state": state_meta}


def join_optimizer_state(tensors: dict, meta: dict) -> dict:
    state = {}
    for pid, m in meta["state"].items():
        st = dict(m)
        prefix = f"opt.{pid}."
        st.update({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        state[int(pid)] = st
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(out_dir, step: int, tensors: dict, state: dict, keep: int = 2) -> Path:
    """Write ``checkpoint-<step>.safetensors`` then ``checkpoint.json``; prune older files."""
    out_dir = Path(out_dir)
    name = f"checkpoint-{step:08d}.safetensors"
    atomic_save_tensors(out_dir / name, tensors)
    atomic_write_json(out_dir / STATE_JSON, dict(state, step=step, tensors=name))
    old = sorted(out_dir.glob("checkpoint-*.safetensors"))
    for p in old[:-keep] if keep > 0 else []:
        if p.name != name:
            p.unlink(missing_ok=True)
    return out_dir / name


SNAPSHOT_GLOB = "ema-*.safetensors"


def save_snapshot(snap_dir, step: int, tensors: dict, metadata: dict, keep: int = 0) -> Path:
    """Write the post-hoc EMA snapshot ``ema-<step>.safetensors``; with ``keep > 0`` delete
    all but the newest ``keep`` (disk stays bounded however long the run)."""
    snap_dir = Path(snap_dir)
    path = snap_dir / f"ema-{step:08d}.safetensors"
    atomic_save_tensors(path, tensors, metadata)
    old = sorted(snap_dir.glob(SNAPSHOT_GLOB))
    for p in old[:-keep] if keep > 0 else []:
        if p != path:
            p.unlink(missing_ok=True)
    return path


def load_checkpoint(out_dir, device="cpu") -> tuple[dict, dict] | None:
    """(state JSON, tensors) of the newest complete checkpoint, or None when there is none."""
    path = Path(out_dir) / STATE_JSON
    if not path.exists():
        return None
    state = read_json(path)
    tpath = Path(out_dir) / state["tensors"]
    if not tpath.exists():
        raise FileNotFoundError(f"{path} names {tpath.name}, which is missing")
    return state, load_safetensors(tpath, device)
