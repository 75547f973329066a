"""Image sources: a dataset as an index (integer labels + where each image lives), decoded on
demand, a batch at a time.

Memory is the index only (8 bytes of label and a few of location per image); pixels are read
and decoded in ``read(indices)``, which DataLoader workers call. Every source is picklable
(an open file is dropped and reopened in the worker that uses it) and describes itself
as JSON (``describe()`` / ``open_source``), which is how stages hand datasets to each other.

- ``TensorSource``: images already in memory (small demo sets, tests).
- ``RecordIOSource``: insightface ``.rec``/``.idx``, random access through the offsets.
- ``FolderSource``: a list of image files with their labels.
- ``SubsetSource``: some images of another source, optionally relabelled.
- ``ConcatSource``: sources one after another (``D_orig ∪ D_aug``), labels kept as they are.
- ``ResizedSource`` / ``resized``: a source read at another size.
- ``in_memory_if_small``: small sets decoded once and held (what the demo trains on).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch

from auggen.data.image_codec import decode_image, resize_images
from auggen.data.recordio import IndexTable, read_record_at, recordio_paths, unpack_payload
from auggen.data.types import LabeledImages


class ImageSource:
    """``labels``: int64 (N,); ``read(idx)`` -> uint8 (B, 3, size, size) RGB."""

    labels: torch.Tensor
    num_classes: int
    size: int

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, indices) -> torch.Tensor:
        idx = _as_index(indices, len(self))
        if len(idx) == 0:
            return torch.empty(0, 3, self.size, self.size, dtype=torch.uint8)
        return torch.stack([self.read_one(int(i)) for i in idx])

    def read_one(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def name(self, i: int) -> str:
        return str(i)

    def describe(self) -> dict:
        raise NotImplementedError

    def to_images(self, batch: int = 256, names: bool = True) -> LabeledImages:
        """Everything decoded in memory (only for small sets: figures, tests, the trainers'
        ``in_memory_if_small``): one uint8 tensor filled a batch at a time, so the peak is
        the set's pixels once (a list of batches joined by ``cat`` held them twice).
        ``names=False``: no per-image name strings."""
        images = torch.empty(len(self), 3, self.size, self.size, dtype=torch.uint8)
        for s in range(0, len(self), batch):
            part = self.read(range(s, min(s + batch, len(self))))
            if s == 0 and tuple(part.shape[1:]) != tuple(images.shape[1:]):
                images = torch.empty(len(self), *part.shape[1:], dtype=torch.uint8)
            images[s : s + len(part)] = part
        listed = [self.name(i) for i in range(len(self))] if names else []
        return LabeledImages(images, self.labels.clone(), listed, self.num_classes)


def _as_index(indices, n: int) -> np.ndarray:
    idx = np.asarray(indices.tolist() if torch.is_tensor(indices) else list(indices), np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"image index out of range [0, {n}): {int(idx.min())}..{int(idx.max())}")
    return idx


class TensorSource(ImageSource):
    """Images held in memory. ``names_from``: a source whose ``name(i)`` names image i (a set
    held by ``in_memory_if_small`` keeps no per-image strings of its own)."""

    def __init__(self, data: LabeledImages, size: int | None = None, names_from=None):
        images = data.images
        self.size = int(size or images.shape[-1])
        if tuple(images.shape[-2:]) != (self.size, self.size):
            images = resize_images(images, self.size)
        self.images, self.labels = images, data.labels.long()
        self.names, self.num_classes = list(data.names), int(data.num_classes)
        self.names_from = names_from

    def read(self, indices) -> torch.Tensor:
        return self.images[torch.from_numpy(_as_index(indices, len(self)))]

    def read_one(self, i: int) -> torch.Tensor:
        return self.images[i]

    def name(self, i: int) -> str:
        if self.names:
            return self.names[i]
        return self.names_from.name(i) if self.names_from is not None else str(i)

    def describe(self) -> dict:
        raise TypeError("an in-memory TensorSource has no file to describe; save it first")


class RecordIOSource(ImageSource):
    """Images at ``keys`` of an insightface RecordIO file; ``labels`` as given (the data stage
    reads them once from the record headers, see ``scan_recordio``)."""

    def __init__(self, path, keys, labels, num_classes: int, size: int):
        self.rec, idx_path = recordio_paths(path)
        index = IndexTable.read(idx_path)
        keys = np.asarray(keys, np.int64)
        pos, found = index.find(keys)
        if not found.all():
            missing = keys[~found][:5].tolist()
            raise ValueError(f"{idx_path}: keys {missing} are not in the index")
        self.keys = keys
        self.offsets = index.offsets[pos]
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.num_classes, self.size = int(num_classes), int(size)
        self._fh = None
        self._pid = None

    def _file(self):
        # Positioned reads (pread), not a memory map: a map keeps every page it touched
        # resident in this process, so an epoch would show the whole .rec in every worker.
        if self._fh is None or self._pid != os.getpid():
            self._fh = open(self.rec, "rb", buffering=0)
            self._pid = os.getpid()
        return self._fh

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fh"] = None  # reopened by the worker that reads
        return state

    def read_one(self, i: int) -> torch.Tensor:
        what = f"{self.rec} key {int(self.keys[i])}"
        payload = read_record_at(self._file(), int(self.offsets[i]), what)
        return decode_image(unpack_payload(payload, what)[1], what, self.size)

    def name(self, i: int) -> str:
        return f"{self.rec.name}:{int(self.keys[i])}"

    def describe(self) -> dict:
        return {"kind": "recordio", "path": str(self.rec), "size": self.size}


class FolderSource(ImageSource):
    """Image files under ``root`` (paths relative to it) with their labels."""

    def __init__(self, root, files: list[str], labels, num_classes: int, size: int):
        self.root, self.files = Path(root), list(files)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(self.files) != len(self.labels):
            raise ValueError(f"{len(self.files)} files but {len(self.labels)} labels")
        self.num_classes, self.size = int(num_classes), int(size)

    def read_one(self, i: int) -> torch.Tensor:
        path = self.root / self.files[i]
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ValueError(f"{path}: cannot read image ({e})") from e
        return decode_image(raw, str(path), self.size)

    def name(self, i: int) -> str:
        return self.files[i]

    def describe(self) -> dict:
        return {"kind": "folder", "root": str(self.root), "size": self.size}


class SubsetSource(ImageSource):
    def __init__(self, base: ImageSource, indices, labels=None, num_classes: int | None = None):
        self.base = base
        self.index = _as_index(indices, len(base))
        self.labels = (
            base.labels[torch.from_numpy(self.index)]
            if labels is None
            else torch.as_tensor(np.asarray(labels), dtype=torch.long)
        )
        if len(self.labels) != len(self.index):
            raise ValueError(f"{len(self.index)} indices but {len(self.labels)} labels")
        self.num_classes = int(base.num_classes if num_classes is None else num_classes)
        self.size = base.size

    def read(self, indices) -> torch.Tensor:
        return self.base.read(self.index[_as_index(indices, len(self))])

    def read_one(self, i: int) -> torch.Tensor:
        return self.base.read_one(int(self.index[i]))

    def name(self, i: int) -> str:
        return self.base.name(int(self.index[i]))


class ConcatSource(ImageSource):
    """``parts`` one after another; labels as each part has them (give later parts labels
    after the earlier ones' classes, as ``generate`` does)."""

    def __init__(self, parts: list[ImageSource], num_classes: int | None = None):
        sizes = {p.size for p in parts}
        if len(sizes) != 1:
            raise ValueError(f"cannot join image sources of different sizes {sorted(sizes)}")
        self.parts, self.size = list(parts), sizes.pop()
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.labels = torch.cat([p.labels for p in parts])
        self.num_classes = int(num_classes or max(p.num_classes for p in parts))

    def _locate(self, i: int) -> tuple[ImageSource, int]:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k], i - int(self.starts[k])

    def read(self, indices) -> torch.Tensor:
        idx = _as_index(indices, len(self))
        out = torch.empty(len(idx), 3, self.size, self.size, dtype=torch.uint8)
        part = np.searchsorted(self.starts, idx, side="right") - 1
        for k in np.unique(part):
            rows = np.nonzero(part == k)[0]
            out[torch.from_numpy(rows)] = self.parts[k].read(idx[rows] - self.starts[k])
        return out

    def read_one(self, i: int) -> torch.Tensor:
        src, j = self._locate(i)
        return src.read_one(j)

    def name(self, i: int) -> str:
        src, j = self._locate(i)
        return src.name(j)


class ResizedSource(ImageSource):
    """Any source, resized per batch (antialiased, as ``resize_images``)."""

    def __init__(self, base: ImageSource, size: int):
        self.base, self.size = base, int(size)
        self.labels, self.num_classes = base.labels, base.num_classes

    def read(self, indices) -> torch.Tensor:
        return resize_images(self.base.read(indices), self.size)

    def read_one(self, i: int) -> torch.Tensor:
        return self.read([i])[0]

    def name(self, i: int) -> str:
        return self.base.name(i)


def resized(src: ImageSource, size: int) -> ImageSource:
    """``src`` at ``size`` px: file decoders resize as they decode, other sources per batch."""

    if src.size == size:
        return src
    if isinstance(src, (RecordIOSource, FolderSource)):
        out = copy.copy(src)
        out.size = int(size)
        return out
    return ResizedSource(src, size)


SMALL_SET_BYTES = 256 << 20  # decoded sets up to this size are held in memory by trainers


def in_memory_if_small(src: ImageSource, limit: int = SMALL_SET_BYTES) -> ImageSource:
    """``src`` decoded once into memory when its pixels fit in ``limit`` bytes (the demo
    sets: training then reads tensors, not files, every epoch); larger sets stream as they
    are. The pixels are the same either way."""
    if isinstance(src, TensorSource) or len(src) * 3 * src.size**2 > limit:
        return src
    return TensorSource(src.to_images(names=False), names_from=src)


def as_source(data, size: int | None = None) -> ImageSource:
    """An ImageSource for ``data`` (an ImageSource, or LabeledImages kept in memory)."""
    if isinstance(data, ImageSource):
        if size is not None and data.size != size:
            raise ValueError(f"source gives {data.size} px images, {size} px were asked for")
        return data
    if isinstance(data, LabeledImages):
        return TensorSource(data, size)
    raise TypeError(f"expected LabeledImages or an ImageSource, got {type(data).__name__}")
