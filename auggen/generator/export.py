"""Write any generator (``Precond``) as a folder ``load_generator`` reads: JSON + safetensors.

The build arguments are read back from the network itself (``precond_build_kwargs``) and
checked by rebuilding it, so a network from :func:`load_edm2_pickle`, ``build_unet`` or a
training run exports the same way. The folder holds ``checkpoint.json`` (format, preset,
resolution, label_dim, img_channels, overrides, ema_stds) and one
``checkpoint-00000000.safetensors`` with the weights under ``ema0.``; ``overrides`` carries
every size, so ``preset`` only names the nearest named preset.
"""

from __future__ import annotations

from pathlib import Path

import torch

from auggen.generator.checkpoint import STATE_JSON, atomic_save_tensors
from auggen.generator.loading import FORMAT
from auggen.generator.presets import PRESETS
from auggen.generator.unet import Precond
from auggen.infra.files import atomic_write_json


def _level_blocks(net: Precond) -> list[tuple[int, list]]:
    """[(resolution, encoder blocks of that level)] from the highest resolution down."""
    levels: dict[int, list] = {}
    for name, block in net.unet.enc.items():
        res = int(name.split("x", 1)[0])
        levels.setdefault(res, []).append((name, block))
    return sorted(levels.items(), reverse=True)


def precond_build_kwargs(net: Precond) -> dict:
    """The ``Precond(**kwargs)`` arguments that rebuild ``net`` (checked by rebuilding it)."""
    unet = net.unet
    levels = _level_blocks(net)
    stem = dict(levels[0][1])[f"{net.img_resolution}x{net.img_resolution}_conv"]
    model_channels = stem.out_channels
    cblock = [blocks[-1][1].out_channels for _, blocks in levels]
    num_blocks = sum(1 for name, _ in levels[0][1] if "_block" in name)
    blocks = [b for b in list(unet.enc.values()) + list(unet.dec.values()) if hasattr(b, "flavor")]
    attn = [b for b in blocks if b.num_heads]
    ref = blocks[0] if blocks else None
    kw = dict(
        img_resolution=net.img_resolution,
        img_channels=net.img_channels,
        label_dim=net.label_dim,
        use_fp16=net.use_fp16,
        sigma_data=net.sigma_data,
        logvar_channels=net.logvar_fourier.freqs.numel(),
        model_channels=model_channels,
        channel_mult=[c // model_channels for c in cblock],
        num_blocks=num_blocks,
        attn_resolutions=[
            res for res, bl in levels if any(b.num_heads for n, b in bl if "_block" in n)
        ],
        label_balance=unet.label_balance,
        concat_balance=unet.concat_balance,
    )
    if unet.emb_fourier.freqs.numel() != cblock[0]:
        kw["channel_mult_noise"] = unet.emb_fourier.freqs.numel() // model_channels
    if unet.emb_noise.out_channels != max(cblock):
        kw["channel_mult_emb"] = unet.emb_noise.out_channels // model_channels
    if ref is not None:
        kw.update(
            dropout=ref.dropout,
            res_balance=ref.res_balance,
            attn_balance=ref.attn_balance,
            clip_act=ref.clip_act,
        )
    if attn:
        kw["channels_per_head"] = min(b.out_channels // b.num_heads for b in attn)
    _check_rebuild(net, kw)
    return kw


def _check_rebuild(net: Precond, kw: dict) -> None:
    with torch.device("meta"):
        twin = Precond(**kw)
    got = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    heads = [getattr(m, "num_heads", None) for m in net.modules()]
    twin_heads = [getattr(m, "num_heads", None) for m in twin.modules()]
    if got != want or heads != twin_heads:
        raise ValueError(f"cannot express this network as Precond kwargs (tried {kw})")


def _nearest_preset(kw: dict) -> str:
    keys = ("model_channels", "channel_mult", "num_blocks")
    for name, preset in PRESETS.items():
        if all(tuple(_seq(preset.get(k))) == tuple(_seq(kw[k])) for k in keys):
            return name
    return "edm2-img64-xs"


def _seq(v):
    return v if isinstance(v, (list, tuple)) else [v]


def save_generator_safetensors(net: Precond, out_dir, ema_std: float | None = None) -> Path:
    """Write ``net`` to ``out_dir`` so that ``load_generator(out_dir)`` rebuilds it exactly."""
    kw = precond_build_kwargs(net)
    out = Path(out_dir)
    tensors_name = "checkpoint-00000000.safetensors"
    tensors = {f"ema0.{k}": v.detach() for k, v in net.state_dict().items()}
    atomic_save_tensors(out / tensors_name, tensors)
    sizes = {
        k: v for k, v in kw.items() if k not in ("img_resolution", "img_channels", "label_dim")
    }
    state = dict(
        format=FORMAT,
        preset=_nearest_preset(kw),
        resolution=kw["img_resolution"],
        label_dim=kw["label_dim"],
        img_channels=kw["img_channels"],
        overrides=sizes,
        ema_stds=[ema_std],
        step=0,
        tensors=tensors_name,
    )
    atomic_write_json(out / STATE_JSON, state)
    return out
