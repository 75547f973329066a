"""Generated data as RecordIO shards: what ``repro`` and ``generate`` write and read back.

A shard is an insightface-layout ``.rec``/``.idx`` (PNG records, lossless, so a resumed run
re-reads exactly the pixels it wrote; readable by insightface / arcface_torch loaders) plus a
JSON sidecar written last, which marks the shard complete and holds its manifest rows. The
stage's dataset is an index over all shards (``<name>.index.json``): a view, not a copy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from auggen.data import write_recordio
from auggen.data.image_codec import encode_image
from auggen.data.index import write_index
from auggen.data.recordio import scan_recordio
from auggen.data.source import ConcatSource, RecordIOSource
from auggen.data.types import LabeledImages
from auggen.infra.files import atomic_write_json, read_json

RECORD_FORMAT = "png"


def shard_done(prefix: Path) -> bool:
    return prefix.with_suffix(".json").exists()


def write_shard(prefix: Path, images, labels, num_classes: int, meta: dict) -> None:
    """One shard: records in the given order (labels grouped), then its JSON sidecar. Its
    identity records cover the labels it holds, not all ``num_classes`` (which the view over
    the shards keeps); shards written with one record per class still read the same."""
    data = LabeledImages(images, torch.as_tensor(labels), [], num_classes)
    write_recordio(prefix, data, fmt=RECORD_FORMAT, write_property=False, all_identities=False)
    atomic_write_json(prefix.with_suffix(".json"), {"count": len(data), **meta})


def shard_source(prefix: Path, num_classes: int, size: int) -> RecordIOSource:
    """A finished shard as an ImageSource (keys 1..n in the order they were written)."""

    scan = scan_recordio(prefix.with_suffix(".rec"))
    return RecordIOSource(scan.rec, scan.keys, scan.labels, num_classes, size)


def index_shards(prefixes: list[Path], num_classes: int, size: int, index_path: Path):
    """The view over all shards, saved as ``index_path``; returns (source, sidecars)."""
    parts = [shard_source(p, num_classes, size) for p in prefixes]
    src = ConcatSource(parts, num_classes)
    write_index(index_path, src)
    return src, [read_json(p.with_suffix(".json")) for p in prefixes]


def export_png(root: Path, images, labels, names: list[str]) -> None:
    """PNG copies (``root/<name>``) of one shard's images, for people to look at."""

    for img, name in zip(images, names):
        path = Path(root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_image(img, "png"))
