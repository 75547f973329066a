"""Rebuild a trained generator from its output folder (the checkpoint JSON names the network)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from auggen.generator.checkpoint import SNAPSHOT_GLOB, STATE_JSON, load_checkpoint
from auggen.generator.ema import posthoc_coefficients, weighted_sum
from auggen.generator.presets import build_unet
from auggen.generator.unet import Precond
from auggen.infra.files import load_safetensors, read_json

FORMAT = "auggen-generator-v1"


def _build(state: dict, out_dir) -> Precond:
    if state.get("format") != FORMAT:
        raise ValueError(f"{out_dir}: not an auggen generator checkpoint (format {FORMAT!r})")
    return build_unet(
        state["preset"],
        int(state["resolution"]),
        int(state["label_dim"]),
        int(state["img_channels"]),
        **state["overrides"],
    )


def _expect(state: dict, out_dir, **expected) -> None:
    for key, want in expected.items():
        if want is not None and state.get(key) != want:
            raise ValueError(
                f"{out_dir} holds a generator with {key}={state.get(key)!r}, expected {want!r}"
            )


def load_weights(net: torch.nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """``load_state_dict`` with an error that names the first mismatching tensor."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the network: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]} (was it written for another preset or label_dim?)"
        )
    for k, v in state_dict.items():
        if own[k].shape != v.shape:
            raise ValueError(
                f"{source}: {k} has shape {tuple(v.shape)}, the network expects "
                f"{tuple(own[k].shape)} (another preset or label_dim?)"
            )
    net.load_state_dict(state_dict)


def load_generator(
    out_dir,
    device="cpu",
    ema_index: int = 0,
    preset: str | None = None,
    label_dim: int | None = None,
) -> Precond:
    """The EMA network ``ema_index`` of the newest checkpoint in ``out_dir``, in eval mode.

    ``preset`` / ``label_dim``, when given, must match the checkpoint.
    """
    ck = load_checkpoint(out_dir, "cpu")
    if ck is None:
        raise FileNotFoundError(f"{Path(out_dir) / STATE_JSON}: no generator checkpoint")
    state, tensors = ck
    _expect(state, out_dir, preset=preset, label_dim=label_dim)
    n = len(state["ema_stds"])
    if not 0 <= ema_index < n:
        raise ValueError(f"ema_index must be in [0, {n}), got {ema_index}")
    net = _build(state, out_dir)
    prefix = f"ema{ema_index}."
    weights = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    load_weights(net, weights, f"{out_dir} ema{ema_index}")
    return net.to(device).eval().requires_grad_(False)


def load_posthoc_generator(out_dir, std: float, step: int | None = None, device="cpu") -> Precond:
    """Post-hoc EMA: combine the stored EMA snapshots into the EMA of ``std`` at ``step``.

    Snapshots in fp32 (older runs) and bf16 are both read; the weights come from their
    metadata alone and the files are then loaded one at a time, so memory is one snapshot
    plus an fp64 accumulator however many snapshots there are.
    """
    ck = load_checkpoint(out_dir, "cpu")
    if ck is None:
        raise FileNotFoundError(f"{Path(out_dir) / STATE_JSON}: no generator checkpoint")
    state = ck[0]
    files = []  # (path, step, stds)
    for f in sorted((Path(out_dir) / "ema_snapshots").glob(SNAPSHOT_GLOB)):
        with safe_open(str(f), "pt") as h:
            meta = h.metadata()
        t = int(meta["step"])
        if step is None or t <= step:
            files.append((f, t, [float(x) for x in meta["stds"].split(",")]))
    if not files:
        raise FileNotFoundError(f"{out_dir}/ema_snapshots: no snapshots (set snapshot_every > 0)")
    out_t = step if step is not None else max(t for _, t, _ in files)
    in_t = [t for _, t, stds in files for _ in stds]
    in_std = [s for _, _, stds in files for s in stds]
    coef = iter(posthoc_coefficients(in_t, in_std, [out_t], [std])[:, 0])

    def weighted():
        for f, _, stds in files:
            tensors = load_safetensors(f)
            for i in range(len(stds)):
                prefix = f"ema{i}."
                sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                yield next(coef), sd

    net = _build(state, out_dir)
    load_weights(net, weighted_sum(weighted()), f"{out_dir} post-hoc EMA")
    return net.to(device).eval().requires_grad_(False)


def read_state(out_dir) -> dict:
    return read_json(Path(out_dir) / STATE_JSON)
