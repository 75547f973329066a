"""TinyFace-style 1:N identification sets: probes, a matching gallery and distractors.

Layout (the aligned TinyFace test set): ``<root>/Probe``, ``<root>/Gallery_Match`` and
``<root>/Gallery_Distractor`` hold image files named "<identity id>_<n>.<ext>"; the identity
is the number before the first underscore (distractors carry no identity we use).
"""

from __future__ import annotations

from pathlib import Path

import torch

from auggen.data.image_codec import load_image_file, stack_images
from auggen.data.image_folder import IMAGE_SUFFIXES
from auggen.data.types import LabeledImages

SPLITS = {"probe": "Probe", "gallery": "Gallery_Match", "distractor": "Gallery_Distractor"}


def _identity(path: Path) -> int:
    head = path.stem.split("_")[0]
    if not head.isdigit():
        raise ValueError(f"{path}: expected a file name '<identity id>_<n>.<ext>'")
    return int(head)


def read_identification_split(root, split: str, size: int | None = None) -> LabeledImages:
    """One split ("probe", "gallery" or "distractor") as LabeledImages (labels = identity ids;
    -1 for distractors). ``num_classes`` is max id + 1, ids are kept so probe and gallery
    labels stay comparable."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    folder = Path(root) / SPLITS[split]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing (expected {list(SPLITS.values())} in root)")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no images")
    labels = [-1 if split == "distractor" else _identity(p) for p in files]
    images = stack_images([load_image_file(p, size) for p in files], size, str(folder))
    names = [str(p.relative_to(folder)) for p in files]
    k = max(max(labels) + 1, 0)
    return LabeledImages(images, torch.tensor(labels, dtype=torch.long), names, k)


def read_tinyface(root, size: int | None = 112) -> dict[str, LabeledImages]:
    """{"probe", "gallery", "distractor"} splits (distractor only when its folder exists)."""
    out = {s: read_identification_split(root, s, size) for s in ("probe", "gallery")}
    if (Path(root) / SPLITS["distractor"]).is_dir():
        out["distractor"] = read_identification_split(root, "distractor", size)
    return out
