"""How stages hand tensors to each other: safetensors bundles, never pickles.

A bundle is one ``.safetensors`` file: tensors in its body, the other (JSON-able) values in
its header (see ``auggen.files``). A planted or corrupt file fails to load with an error that
names it; nothing in it runs.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from auggen.data.types import LabeledImages
from auggen.files import load_bundle, save_bundle

FORMAT = "safetensors-v1"  # part of every stage's fingerprint: a format change reruns stages
EXT = ".safetensors"

save_atomic = save_bundle
load = load_bundle


def save_images(data: LabeledImages, path) -> None:
    save_bundle(
        {
            "images": data.images,
            "labels": data.labels,
            "names": list(data.names),
            "num_classes": int(data.num_classes),
        },
        path,
    )


def load_images(path) -> LabeledImages:
    d = load_bundle(path)
    missing = [k for k in ("images", "labels", "num_classes") if k not in d]
    if missing:
        raise ValueError(f"{path}: not an image set (missing {missing})")
    return LabeledImages(d["images"], d["labels"], d.get("names", []), d["num_classes"])


def concat(parts: list[LabeledImages], num_classes: int) -> LabeledImages:
    """One set from several with the same image size (labels kept as they are)."""
    sizes = {tuple(p.images.shape[1:]) for p in parts}
    if len(sizes) != 1:
        raise ValueError(f"cannot concatenate image sets of different shapes {sorted(sizes)}")
    return LabeledImages(
        torch.cat([p.images for p in parts]),
        torch.cat([p.labels for p in parts]),
        [n for p in parts for n in (p.names or [""] * len(p))],
        num_classes,
    )


def write_csv(path, rows: list[dict]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    keys = list(rows[0]) if rows else []
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
