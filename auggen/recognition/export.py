"""A recogniser out of torch (``auggen export MODEL --onnx OUT.onnx`` or ``--torchscript OUT.pt``;
the command is :mod:`auggen.cli.export`).

MODEL is anything :func:`auggen.recognition.load_pretrained` reads (insightface ``.pth``,
AdaFace ``.ckpt``, a ``.safetensors`` state dict, an auggen FR run). The exported graph maps

    input (batch, 3, S, S) float32, RGB (or BGR with ``--input-bgr``), (pixel / 255 - 0.5) / 0.5
    -> embedding (batch, D) float32, unit L2 norm

with a dynamic batch axis; AdaFace's own BGR flip stays inside the graph. ``--flip`` fuses the
insightface test protocol into it: ``normalize(E(x) + E(mirror(x)))``. The convention is
written into the file (ONNX ``metadata_props``, TorchScript extra file ``auggen.json``), and the
file is checked after writing: onnxruntime (or ``torch.jit.load``) against torch on random and
real images (the bundled ORL faces, or ``--check-images``) at batch sizes 1 and 7.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from auggen.data import load_orl
from auggen.data.dataset import open_dataset
from auggen.eval.embeddings import to_model_input
from auggen.infra.files import atomic_path

CHECK_BATCHES = (1, 7)
MAX_ABS = 1e-4  # embeddings of the exported model vs torch, per element
MIN_COS = 0.99999  # ... and per row
OPSET = 17
EXTRA = "the 'onnx' extra: pip install 'auggen[onnx]' (onnx, onnxruntime)"


def onnx_modules():
    """(onnx, onnxruntime), or an ImportError naming the extra to install."""
    try:
        import onnx  # optional: the onnx extra, only for export and .onnx models
        import onnxruntime  # optional: as onnx
    except ImportError as e:
        raise ImportError(f"ONNX export and .onnx models need {EXTRA} ({e})") from None
    return onnx, onnxruntime


class ExportGraph(nn.Module):
    """An Embedder with the exported input convention: optional BGR input, optional flip."""

    def __init__(self, embedder: nn.Module, flip: bool = False, input_bgr: bool = False):
        super().__init__()
        self.embedder = embedder
        self.flip = flip
        self.input_bgr = input_bgr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_bgr:
            x = x.flip(1)
        emb = self.embedder(x)
        if self.flip:
            emb = F.normalize(emb + self.embedder(x.flip(3)), dim=1)
        return emb


def convention(model, flip: bool, input_bgr: bool, source: str) -> dict:
    """What the exported file expects and returns (stored in it as metadata)."""
    s = int(model.input_size)
    return {
        "producer": "auggen export",
        "source": str(source),
        "source_layout": getattr(model, "layout", ""),
        "input_name": "input",
        "input_shape": ["batch", 3, s, s],
        "input_size": s,
        "input_color": "BGR" if input_bgr else "RGB",
        "input_layout": "NCHW",
        "input_dtype": "float32",
        "input_range": [-1.0, 1.0],
        "input_normalisation": "(pixel / 255 - 0.5) / 0.5",
        "output_name": "embedding",
        "embedding_size": int(model.embedding_size),
        "output": "float32 (batch, embedding_size), unit L2 norm",
        "flip_fused": bool(flip),
    }


def export_onnx(graph: ExportGraph, path, meta: dict, opset: int = OPSET) -> None:
    """Write ``graph`` as ONNX (dynamic batch) with ``meta`` in its metadata_props."""
    onnx, _ = onnx_modules()
    path = Path(path)
    s = meta["input_size"]
    x = torch.zeros(2, 3, s, s)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript-based exporter: no extra dependency (the dynamo one needs onnxscript).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.eval(),
            (x,),
            str(tmp),
            dynamo=False,
            input_names=["input"],
            output_names=["embedding"],
            dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=opset,
        )
        model = onnx.load(str(tmp))
        for k, v in {"auggen": json.dumps(meta), **_flat(meta)}.items():
            model.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))


def _flat(meta: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def export_torchscript(graph: ExportGraph, path, meta: dict) -> None:
    """Write ``graph`` traced as TorchScript, ``meta`` as the extra file ``auggen.json``."""
    s = meta["input_size"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph.eval(), torch.zeros(2, 3, s, s), check_trace=False)
    with atomic_path(Path(path)) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit: still supported
        torch.jit.save(traced, str(tmp), _extra_files={"auggen.json": json.dumps(meta)})


class OnnxEmbedder(nn.Module):
    """An exported ``.onnx`` recogniser as an Embedder: same inputs, same outputs, run by
    onnxruntime on the CPU. ``flip_fused``: the graph embeds the mirror too."""

    def __init__(self, path, threads: int = 0):
        super().__init__()
        _, ort = onnx_modules()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such .onnx file")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: onnxruntime cannot load it as a model ({e})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "auggen" in props:
            meta = json.loads(props["auggen"])
        else:  # an .onnx from elsewhere: take the shapes, assume this project's convention
            shape = self.session.get_inputs()[0].shape
            out = self.session.get_outputs()[0].shape
            if len(shape) != 4 or not isinstance(shape[-1], int):
                raise ValueError(
                    f"{path}: input shape {shape}; expected (batch, 3, S, S) with a fixed S"
                )
            meta = {"input_size": shape[-1], "embedding_size": out[-1], "input_color": "RGB"}
            meta["flip_fused"] = False
        self.meta = meta
        self.source = str(path)
        self.layout = "onnx"
        self.input_size = int(meta["input_size"])
        self.embedding_size = int(meta["embedding_size"])
        self.flip_fused = bool(meta.get("flip_fused", False))
        self.input_bgr = meta.get("input_color") == "BGR"
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [-1, 1] (the Embedder convention; flipped to BGR when the file wants it)."""
        x = x.flip(1) if self.input_bgr else x
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(out)


def check_images(size: int, path=None, count: int = max(CHECK_BATCHES)) -> torch.Tensor:
    """``count`` real uint8 images at ``size`` px: from ``path`` (anything ``auggen embed``
    reads) or the bundled ORL faces."""
    if path is None:
        faces = load_orl(size=size)
        pick = torch.linspace(0, len(faces) - 1, count).long()
        return faces.images[pick]

    src = open_dataset(path, size).source
    if len(src) == 0:
        raise ValueError(f"{path}: no images to check the export with")
    return torch.stack([src.read_one(i % len(src)) for i in range(count)])


def compare(reference, exported, images_uint8, bgr: bool = False, seed: int = 0) -> list[dict]:
    """Rows (inputs, batch, max_abs, min_cos, ok): ``exported`` vs ``reference`` (callables of
    the same float input) on random inputs in [-1, 1] and on RGB ``images_uint8`` (given in
    BGR order when ``bgr``)."""

    g = torch.Generator().manual_seed(seed)
    size = images_uint8.shape[-1]
    rows = []
    for b in CHECK_BATCHES:
        random = torch.rand(b, 3, size, size, generator=g) * 2 - 1
        real = to_model_input(images_uint8[:b])
        real = real.flip(1) if bgr else real
        for kind, x in (("random", random), ("real", real)):
            with torch.no_grad():
                want = reference(x).float()
                got = exported(x).float()
            diff = float((got - want).abs().max())
            cos = float(F.cosine_similarity(got, want, dim=1).min())
            ok = diff <= MAX_ABS and cos >= MIN_COS
            rows.append({"inputs": kind, "batch": b, "max_abs": diff, "min_cos": cos, "ok": ok})
    return rows
