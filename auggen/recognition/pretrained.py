"""Face-recognition models from elsewhere, behind one interface: RGB in [-1, 1] -> unit embeddings.

``load_pretrained(path)`` recognises

- an insightface ``.pth`` (a plain state dict of ``iresnet``; the stage depths, width,
  embedding size and input size are read off the tensors, so r18/34/50/100/200 all load);
- an AdaFace ``.ckpt`` (a Lightning checkpoint: ``state_dict`` with ``model.``-prefixed
  backbone keys and ``head.`` keys, which are ignored), built in AdaFace's layout
  (:mod:`.adaface_net`) and fed BGR, as AdaFace was trained;
- a state dict of either layout in a ``.safetensors`` file;
- this project's FR runs (a folder with ``config.json`` + ``model.safetensors``, or a pipeline
  ``train_fr`` stage folder holding exactly one such run), via ``load_backbone``.

Files are read with ``torch.load(weights_only=True)`` or safetensors. Lightning checkpoints
whose hyper-parameters hold objects that ``weights_only`` refuses are read with the inert
unpickler (:mod:`auggen.infra.inert_pickle`), which builds tensors and nothing else. Weights load
strictly; only a missing BatchNorm ``num_batches_tracked`` counter is filled in.
"""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from auggen.infra.files import UnsafeOrCorruptFile, load_safetensors, load_torch_weights
from auggen.infra.inert_pickle import describe, inert_load
from auggen.recognition.adaface_net import ADAFACE_DEPTHS, AdaFaceIR
from auggen.recognition.iresnet import STAGE_DEPTHS, IResNet

# Globals a Lightning checkpoint's extras may refer to (read as inert records, never called).
CKPT_MODULES = (
    *("torch", "collections", "numpy", "argparse", "pathlib", "omegaconf", "typing"),
    *("pytorch_lightning", "lightning", "lightning_fabric"),
)
INSIGHTFACE_KEY = "conv1.weight"
ADAFACE_KEY = "input_layer.0.weight"


class Embedder(nn.Module):
    """(N, 3, S, S) RGB in [-1, 1] -> float32 (N, D) rows of unit L2 norm.

    ``bgr``: the wrapped net was trained on BGR input (AdaFace), so channels are flipped first.
    ``input_size``: the S the net expects; ``source``: where the weights came from.
    """

    def __init__(self, net: nn.Module, bgr: bool = False, source: str = "", layout: str = ""):
        super().__init__()
        self.net = net
        self.bgr = bgr
        self.source = source
        self.layout = layout
        self.input_size = int(net.input_size)
        self.embedding_size = int(net.embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x.flip(1) if self.bgr else x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return F.normalize(out.float(), dim=1)


def load_pretrained(path, arch: str | None = None, device="cpu") -> Embedder:
    """The model at ``path`` (see the module docstring) as an :class:`Embedder` in eval mode.

    ``arch`` (e.g. ``"ir50"``, ``"r100"``, ``"adaface_ir101"``), when given, must match what
    the weights hold; by default it is inferred from them.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    run = _project_run(path)
    if run is not None:
        from auggen.recognition.train import load_backbone  # train imports this package

        net = load_backbone(run)
        _check_arch(arch, _stage_depths(net), "insightface", run)
        return Embedder(net, source=str(run), layout="auggen").to(device).eval()
    state = _state_dict(path)
    if ADAFACE_KEY in state:
        net, bgr, layout = _adaface(state, path), True, "adaface"
    elif INSIGHTFACE_KEY in state and "fc.weight" in state:
        net, bgr, layout = _insightface(state, path), False, "insightface"
    else:
        raise ValueError(
            f"{path}: a state dict with {len(state)} keys that matches no known layout "
            f"(first keys {list(state)[:3]}); expected insightface iresnet keys like "
            f"'{INSIGHTFACE_KEY}' or AdaFace 'model.{ADAFACE_KEY}'"
        )
    _check_arch(arch, _stage_depths(net), layout, path)
    _load_strict(net, state, path)
    net.requires_grad_(False)
    return Embedder(net, bgr=bgr, source=str(path), layout=layout).to(device).eval()


def _project_run(path: Path) -> Path | None:
    """This project's FR run folder for ``path``, or None when ``path`` is something else."""
    if path.is_file():
        beside = path.parent / "config.json"
        if path.name in ("model.safetensors", "checkpoint.pt") and beside.exists():
            return path.parent
        return None
    if (path / "config.json").exists() and any(
        (path / n).exists() for n in ("model.safetensors", "checkpoint.pt")
    ):
        return path
    runs = sorted(p.parent for p in path.glob("*/seed*/model.safetensors"))
    if len(runs) == 1:
        return runs[0]
    if runs:
        listed = ", ".join(str(r.relative_to(path)) for r in runs[:6])
        raise ValueError(f"{path}: holds {len(runs)} FR runs ({listed}); pass one of them")
    raise FileNotFoundError(
        f"{path}: a folder without config.json + model.safetensors (an auggen FR run) or "
        "train_fr runs under it; expected such a folder or a .pth / .ckpt / .safetensors file"
    )


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        obj = load_safetensors(path)
    else:
        try:
            obj = load_torch_weights(path)
        except UnsafeOrCorruptFile:
            if not zipfile.is_zipfile(path):
                raise
            obj = inert_load(path, CKPT_MODULES)  # e.g. Lightning hyper-parameter objects
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not (
        isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise ValueError(
            f"{path}: found {describe(obj)}; expected a state dict of tensors (insightface "
            "backbone .pth) or a checkpoint with a 'state_dict' (AdaFace .ckpt)"
        )
    keys = list(obj)
    if any(
        k.startswith("model.") for k in keys
    ):  # AdaFace: backbone under model., head under head.
        obj = {k[len("model.") :]: v for k, v in obj.items() if k.startswith("model.")}
    elif all(k.startswith("module.") for k in keys):  # saved from DistributedDataParallel
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _input_size(fc_in: int, channels: int, path: Path) -> int:
    side = math.isqrt(max(fc_in // channels, 0))
    if side * side * channels != fc_in:
        raise ValueError(f"{path}: fc input {fc_in} is not {channels} x side^2")
    return 16 * side


def _insightface(sd: dict, path: Path) -> IResNet:
    width = sd[INSIGHTFACE_KEY].shape[0]
    depths = []
    for s in range(1, 5):
        blocks = {int(k.split(".")[1]) for k in sd if k.startswith(f"layer{s}.")}
        if not blocks:
            raise ValueError(f"{path}: insightface keys without layer{s}.*")
        depths.append(max(blocks) + 1)
    emb, fc_in = sd["fc.weight"].shape
    return IResNet(tuple(depths), _input_size(fc_in, 8 * width, path), emb, width)


def _adaface(sd: dict, path: Path) -> AdaFaceIR:
    width = sd[ADAFACE_KEY].shape[0]
    outs = []
    for i in range(len(sd)):
        w = sd.get(f"body.{i}.res_layer.1.weight")
        if w is None:
            break
        outs.append(w.shape[0])
    depths = [sum(1 for c in outs if c == width * m) for m in (1, 2, 4, 8)]
    if sum(depths) != len(outs) or 0 in depths:
        raise ValueError(
            f"{path}: AdaFace body channels {sorted(set(outs))} are not {width} x [1, 2, 4, 8]"
        )
    emb, fc_in = sd["output_layer.3.weight"].shape
    return AdaFaceIR(tuple(depths), _input_size(fc_in, 8 * width, path), emb, width)


def _stage_depths(net: nn.Module) -> tuple[int, ...]:
    if isinstance(net, AdaFaceIR):
        return net.depths
    return tuple(len(getattr(net, f"layer{s}")) for s in range(1, 5))


def _check_arch(arch: str | None, depths: tuple, layout: str, path) -> None:
    if arch is None:
        return
    m = re.fullmatch(r"(adaface_)?(?:ir_?|iresnet|r)(\d+)", arch.lower())
    name = f"ir{m.group(2)}" if m else None
    if name not in STAGE_DEPTHS:
        known = sorted(STAGE_DEPTHS) + list(ADAFACE_DEPTHS)
        raise ValueError(f"arch must name an IR depth like {known}, got {arch!r}")
    if m.group(1) and layout != "adaface":
        raise ValueError(f"{path}: arch {arch!r} asks for AdaFace's layout, the file is {layout}")
    if STAGE_DEPTHS[name] != tuple(depths):
        raise ValueError(
            f"{path}: arch {arch!r} has stage depths {STAGE_DEPTHS[name]}, the weights have "
            f"{tuple(depths)}"
        )


def _load_strict(net: nn.Module, state: dict, path: Path) -> None:
    own = net.state_dict()
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    for k in own:  # the BN step counter is not a weight; older files lack it
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros((), dtype=torch.long)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path}: weights do not fit the {type(net).__name__} {_stage_depths(net)} they "
            f"describe: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]}"
        )
    net.load_state_dict(state)
