"""Dataset index files: an ImageSource saved as JSON + a small safetensors of integer arrays.

``write_index(path, source)`` writes ``path`` (JSON: the kind, where the pixels are, the image
size and class count) and ``<path stem>.arrays.safetensors`` (labels, RecordIO keys, row
numbers); an image folder's file list goes into ``<stem>.files.txt``. ``open_index(path)``
gives the source back. Pixels are never copied, except for in-memory sets (the ORL demo),
whose images are written once as a safetensors tensor file that is read row by row through a
memory map. Paths inside the index's own folder are stored relative, so a run folder can be
moved. Nothing here unpickles.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from auggen.data.source import (
    ConcatSource,
    FolderSource,
    ImageSource,
    RecordIOSource,
    SubsetSource,
    TensorSource,
)
from auggen.infra.files import (
    UnsafeOrCorruptFile,
    atomic_write_bytes,
    atomic_write_json,
    load_safetensors,
    read_json,
)


class TensorFileSource(ImageSource):
    """Rows of a uint8 (N, 3, S, S) tensor in a safetensors file, read through a memory map."""

    def __init__(self, path, rows, labels, num_classes: int):
        self.path = Path(path)
        try:
            with safe_open(str(self.path), framework="pt") as f:
                shape = f.get_slice("images").get_shape()
        except Exception as e:  # safetensors raises its own error types for foreign files
            raise UnsafeOrCorruptFile(f"{self.path}: not an auggen image tensor file ({e})") from e
        self.size = int(shape[-1])
        self.rows = np.asarray(rows, np.int64)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= shape[0]):
            raise ValueError(f"{self.path}: rows outside [0, {shape[0]})")
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.num_classes = int(num_classes)
        self._file, self._pid = None, None

    def _images(self):
        if self._file is None or self._pid != os.getpid():
            self._file = safe_open(str(self.path), framework="pt")
            self._pid = os.getpid()
        return self._file.get_slice("images")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def read_one(self, i: int) -> torch.Tensor:
        r = int(self.rows[i])
        return self._images()[r : r + 1][0]


def _rel(path: Path, base: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _flatten(src: ImageSource, base: Path, prefix: str, arrays: dict, files: list) -> dict:
    """The JSON entry of ``src``; its arrays go into ``arrays`` under ``prefix``."""
    common = {"size": int(src.size), "num_classes": int(src.num_classes), "count": len(src)}
    if isinstance(src, SubsetSource):
        if isinstance(src.base, (SubsetSource, ConcatSource)):
            raise TypeError("index a subset of a plain source (RecordIO, folder, tensor file)")
        inner = _flatten(src.base, base, prefix, arrays, files)
        for key in ("keys", "rows", "files"):
            if f"{prefix}{key}" in arrays:
                arrays[f"{prefix}{key}"] = arrays[f"{prefix}{key}"][src.index]
        if inner["kind"] == "folder":
            lo, hi = inner["files"]
            picked = [files[lo + int(i)] for i in src.index]
            del files[lo:hi]
            inner["files"] = [len(files), len(files) + len(picked)]
            files.extend(picked)
        arrays[f"{prefix}labels"] = src.labels.numpy().astype(np.int64)
        return {**inner, **common}
    arrays[f"{prefix}labels"] = src.labels.numpy().astype(np.int64)
    if isinstance(src, RecordIOSource):
        arrays[f"{prefix}keys"] = src.keys.astype(np.int64)
        return {"kind": "recordio", "path": _rel(src.rec, base), **common}
    if isinstance(src, FolderSource):
        lo = len(files)
        files.extend(src.files)
        return {"kind": "folder", "root": _rel(src.root, base), "files": [lo, len(files)], **common}
    if isinstance(src, TensorFileSource):
        arrays[f"{prefix}rows"] = src.rows
        return {"kind": "tensors", "path": _rel(src.path, base), **common}
    if isinstance(src, ConcatSource):
        parts = [_flatten(p, base, f"{prefix}{k}.", arrays, files) for k, p in enumerate(src.parts)]
        return {"kind": "concat", "parts": parts, **common}
    if isinstance(src, TensorSource):
        raise TypeError("save in-memory images with write_tensor_file first")
    raise TypeError(f"cannot index a {type(src).__name__}")


def write_tensor_file(path, images: torch.Tensor) -> None:
    """uint8 (N, 3, S, S) images as a safetensors file for ``TensorFileSource``."""

    atomic_write_bytes(path, save({"images": images.contiguous()}))


def _sidecars(path: Path) -> tuple[Path, Path]:
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    return path.with_name(stem + ".arrays.safetensors"), path.with_name(stem + ".files.txt")


def write_index(path, source: ImageSource) -> Path:
    """Save ``source`` as an index at ``path`` (``*.json``); the JSON is written last."""

    path = Path(path)
    arrays_path, files_path = _sidecars(path)
    arrays: dict[str, np.ndarray] = {}
    files: list[str] = []
    entry = _flatten(source, path.parent, "", arrays, files)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    atomic_write_bytes(arrays_path, save(tensors))
    if files:
        atomic_write_bytes(files_path, ("\n".join(files) + "\n").encode())
    atomic_write_json(path, {"format": "auggen-index-v1", **entry})
    return path


def open_index(path) -> ImageSource:
    """The ImageSource that ``write_index`` saved at ``path``."""
    path = Path(path)
    head = read_json(path)
    if head.get("format") != "auggen-index-v1":
        raise ValueError(f"{path}: not an auggen dataset index (format {head.get('format')!r})")
    arrays_path, files_path = _sidecars(path)
    arrays = {k: v.numpy() for k, v in load_safetensors(arrays_path).items()}
    files = files_path.read_text().splitlines() if files_path.exists() else []
    return _build(head, path.parent, "", arrays, files, path)


def _build(e: dict, base: Path, prefix: str, arrays: dict, files: list, path: Path):
    def at(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else base / p

    labels = arrays.get(f"{prefix}labels")
    kind = e.get("kind")
    if kind == "recordio":
        return RecordIOSource(
            at(e["path"]), arrays[f"{prefix}keys"], labels, e["num_classes"], e["size"]
        )
    if kind == "folder":
        lo, hi = e["files"]
        return FolderSource(at(e["root"]), files[lo:hi], labels, e["num_classes"], e["size"])
    if kind == "tensors":
        return TensorFileSource(at(e["path"]), arrays[f"{prefix}rows"], labels, e["num_classes"])
    if kind == "concat":
        parts = [
            _build(p, base, f"{prefix}{k}.", arrays, files, path) for k, p in enumerate(e["parts"])
        ]
        return ConcatSource(parts, e["num_classes"])
    raise ValueError(f"{path}: unknown dataset kind {kind!r}")
