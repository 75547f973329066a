"""``python -m auggen embed MODEL INPUT --out OUT.npy``: face embeddings from any loadable model.

MODEL is anything :func:`auggen.recognition.load_pretrained` reads (insightface ``.pth``, AdaFace
``.ckpt``, an auggen FR run), or an ``.onnx`` file from ``auggen export`` (run by onnxruntime;
when the graph fuses the mirror, the mirror is not added again). INPUT is an image folder
(``root/<identity>/<image>``), an insightface RecordIO (``train.rec`` + ``.idx``, its folder or
prefix) or a verification ``.bin``.
Images are decoded at the model's input size a chunk ahead of the model, embedded in batches
with the insightface test protocol (image + mirror, summed, L2-normalised) and written as

- ``OUT.npy``: float32 (N, D), one unit row per image, in the input's order;
- ``OUT.labels.npy``: int64 (N,) identity labels (folder, RecordIO), or for a ``.bin``
  ``OUT.issame.npy``: bool (N/2,) for the pairs (2i, 2i+1);
- ``OUT.names.txt``: one image name a line (``identity/file``, ``train.rec:key``, ``bin[i]``);
- ``OUT.json``: what was embedded, with which model and settings.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np

from auggen.data.dataset import open_dataset
from auggen.eval.embeddings import embed_source, extract_embeddings
from auggen.infra.files import LOAD_ERRORS, atomic_path, atomic_write_bytes, atomic_write_json
from auggen.recognition.export import OnnxEmbedder
from auggen.recognition.pretrained import load_pretrained

INPUT_KINDS = {"folder": "image_folder"}  # OUT.json's names for open_dataset's kinds


def open_images(path, size: int):
    """(ImageSource at ``size`` px, kind, extra arrays to write) for what ``open_dataset``
    finds at ``path``: labels, or for a verification ``.bin`` the pair flags."""
    ds = open_dataset(path, size)
    if ds.kind == "verification_bin":
        return ds.source, "verification_bin", {"issame": ds.issame}
    return ds.source, INPUT_KINDS.get(ds.kind, ds.kind), {"labels": ds.source.labels.numpy()}


def output_paths(out) -> dict[str, Path]:
    out = Path(out)
    base = out.with_suffix("") if out.suffix == ".npy" else out
    return {
        "embeddings": base.with_name(base.name + ".npy"),
        "labels": base.with_name(base.name + ".labels.npy"),
        "issame": base.with_name(base.name + ".issame.npy"),
        "names": base.with_name(base.name + ".names.txt"),
        "json": base.with_name(base.name + ".json"),
    }


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def load_model(path, arch=None, device="cpu"):
    """An Embedder for ``path``: ``load_pretrained``'s kinds, or an exported ``.onnx``."""
    if Path(path).suffix == ".onnx":
        if device != "cpu":
            raise ValueError(f"{path}: .onnx models run on the CPU here, got --device {device}")
        return OnnxEmbedder(path)

    return load_pretrained(path, arch, device)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m auggen embed",
        description="Embed an image folder, RecordIO or verification .bin with a face model.",
    )
    p.add_argument(
        "model", help="insightface .pth, AdaFace .ckpt, an auggen FR run folder, or an .onnx"
    )
    p.add_argument("input", help="image folder (root/<identity>/<img>), .rec/.idx, or .bin")
    p.add_argument("--out", "-o", required=True, help="OUT.npy (+ .labels.npy/.names.txt/.json)")
    p.add_argument("--arch", help="expected architecture, e.g. ir50 / adaface_ir101 (checked)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-flip", action="store_true", help="skip the mirrored image")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="decoders")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        model = load_model(args.model, args.arch, args.device)
        src, kind, extra = open_images(args.input, model.input_size)
    except (*LOAD_ERRORS, ImportError) as e:
        parser.error(str(e))
    flip = not args.no_flip and not getattr(model, "flip_fused", False)
    if len(src) == 0:
        parser.error(f"{args.input}: no images to embed")
    paths = output_paths(args.out)
    shape = (len(src), model.embedding_size)
    try:
        with atomic_path(paths["embeddings"]) as tmp:
            feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            embed_source(
                lambda x: extract_embeddings(model, x, args.batch_size, flip, args.device),
                src, 4 * args.batch_size, workers=args.workers, out=feats,
                progress=not args.no_progress,
            )  # fmt: skip
            feats.flush()
            del feats
    except LOAD_ERRORS as e:  # an unreadable image or record, named in the message
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    for key, array in extra.items():
        _save_npy(paths[key], array)
    names = "".join(f"{src.name(i)}\n" for i in range(len(src)))
    atomic_write_bytes(paths["names"], names.encode())
    meta = {
        "model": str(args.model),
        "model_layout": model.layout,
        "input": str(args.input),
        "input_kind": kind,
        "num_images": int(len(src)),
        "embedding_size": model.embedding_size,
        "input_size": model.input_size,
        "flip": not args.no_flip,
        "flip_in_model": bool(getattr(model, "flip_fused", False)),
        "files": {k: str(p) for k, p in paths.items() if k in ("embeddings", "names", *extra)},
    }
    atomic_write_json(paths["json"], meta)
    print(f"{len(src)} embeddings ({model.embedding_size}-d) -> {paths['embeddings']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
