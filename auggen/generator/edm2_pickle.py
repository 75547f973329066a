"""NVlabs edm2 network pickles (``network-snapshot-*.pkl``) read without running them.

An edm2 snapshot is a pickled dict whose ``ema`` entry is a ``training.networks_edm2.Precond``
made persistent by ``torch_utils.persistence``: each such module pickles as a call
``_reconstruct_persistent_obj(meta)`` where ``meta`` holds the class's *source code*
(``module_src``), its ``class_name`` and its ``state`` (the module's ``__dict__``: ``_parameters``,
``_buffers``, ``_modules``, and ``_init_kwargs`` recorded by the decorator). Unpickling it
normally executes that source. Here :func:`auggen.infra.inert_pickle.inert_load` turns every object
into an inert record, the tensors are collected by module path, and this project's
:class:`Precond` (same parameter names as edm2) is built from ``_init_kwargs`` and loaded
strictly. Snapshots store the EMA weights in fp16; they are returned in fp32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from auggen.generator.loading import load_weights
from auggen.generator.unet import Precond
from auggen.infra.files import UnsafeOrCorruptFile
from auggen.infra.inert_pickle import Record, describe, inert_load

# What an edm2 snapshot refers to: its training code, dnnlib containers, torch classes.
EDM2_MODULES = ("torch_utils", "training", "dnnlib", "torch", "numpy")
PERSISTENT = "torch_utils.persistence._reconstruct_persistent_obj"

# edm2 constructor arguments this project's Precond / UNet / Block take under the same name.
_PRECOND_ARGS = ("img_resolution", "img_channels", "label_dim")
_ACCEPTED = {
    *("use_fp16", "sigma_data", "logvar_channels"),
    *("model_channels", "channel_mult", "channel_mult_noise", "channel_mult_emb", "num_blocks"),
    *("attn_resolutions", "label_balance", "concat_balance"),
    *("channels_per_head", "dropout", "res_balance", "attn_balance", "clip_act"),
}


def _module_state(obj, where: str) -> tuple[str, dict]:
    """(class name, state dict) of a pickled module: persistent (edm2) or plain torch."""
    if isinstance(obj, Record) and obj.qualname == PERSISTENT:
        meta = obj.args[0] if obj.args else None
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
            raise UnsafeOrCorruptFile(f"{where}: a persistent object without a state dict")
        return str(meta.get("class_name")), meta["state"]
    if isinstance(obj, Record) and isinstance(obj.state, dict):
        return obj.qualname.rsplit(".", 1)[-1], obj.state
    raise UnsafeOrCorruptFile(f"{where}: expected a torch module, found {describe(obj)}")


def _collect(state: dict, prefix: str, out: dict, where: str) -> None:
    """Parameters and persistent buffers under ``prefix``, in registration order."""
    skip = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, t in (state.get(kind) or {}).items():
            if t is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise UnsafeOrCorruptFile(f"{where}: {prefix}{name} is {describe(t)}")
            out[prefix + name] = t
    for name, sub in (state.get("_modules") or {}).items():
        if sub is not None:
            _, sub_state = _module_state(sub, f"{where} {prefix}{name}")
            _collect(sub_state, f"{prefix}{name}.", out, where)


def precond_kwargs(init_args, init_kwargs: dict, where: str) -> dict:
    """edm2 ``Precond(*args, **kwargs)`` -> kwargs for this project's ``Precond``."""
    kw = dict(zip(_PRECOND_ARGS, init_args or ()))
    kw.update(init_kwargs or {})
    kw.setdefault("use_fp16", True)  # edm2's default
    resample_filter = kw.pop("resample_filter", [1, 1])
    if list(resample_filter) != [1, 1]:
        raise ValueError(f"{where}: resample_filter={resample_filter}; only [1, 1] is supported")
    missing = [k for k in _PRECOND_ARGS if k not in kw]
    unknown = sorted(set(kw) - _ACCEPTED - set(_PRECOND_ARGS))
    if missing or unknown:
        raise ValueError(
            f"{where}: init kwargs missing {missing} / not supported {unknown}; "
            f"supported: {sorted(_ACCEPTED)}"
        )
    for key in ("channel_mult", "attn_resolutions"):
        if key in kw:
            kw[key] = tuple(int(v) for v in kw[key])
    return kw


def read_edm2_pickle(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(Precond kwargs, state dict) of the ``ema`` network of an edm2 snapshot, nothing run."""
    path = Path(path)
    data = inert_load(path, EDM2_MODULES)
    if not isinstance(data, dict) or "ema" not in data:
        raise UnsafeOrCorruptFile(
            f"{path}: not an edm2 network snapshot: found {describe(data)}; expected a dict "
            "with an 'ema' network (training.networks_edm2.Precond)"
        )
    class_name, state = _module_state(data["ema"], f"{path} ['ema']")
    if class_name != "Precond":
        raise UnsafeOrCorruptFile(f"{path}: 'ema' is a {class_name}, expected edm2's Precond")
    if not isinstance(state.get("_init_kwargs"), dict):
        raise UnsafeOrCorruptFile(f"{path}: 'ema' has no recorded init kwargs (_init_kwargs)")
    kwargs = precond_kwargs(state.get("_init_args"), state["_init_kwargs"], str(path))
    tensors: dict[str, torch.Tensor] = {}
    _collect(state, "", tensors, str(path))
    return kwargs, tensors


def load_edm2_pickle(path, device="cpu") -> Precond:
    """This project's :class:`Precond` with the weights of an edm2 snapshot's ``ema`` (fp32, eval).

    The file is never executed (see the module docstring); a pickle referring to anything but
    edm2's own modules and torch raises :class:`auggen.infra.inert_pickle.RefusedPickle`.
    """
    kwargs, tensors = read_edm2_pickle(path)
    net = Precond(**kwargs)
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in tensors.items()}
    load_weights(net, state, f"{path} ['ema']")
    return net.to(device).eval().requires_grad_(False)
