"""One directory per identity: root/<identity>/<image>. Sorted identity names -> labels 0..K-1."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from auggen.data.image_codec import encode_image, load_image_file, stack_images
from auggen.data.types import LabeledImages

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff"}


def list_image_folder(root) -> list[tuple[str, list[Path]]]:
    """[(identity, sorted image paths)] for every sub-directory of ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory (expected root/<identity>/<images>)")
    ids = sorted(p for p in root.iterdir() if p.is_dir())
    if not ids:
        raise FileNotFoundError(f"{root}: no identity sub-directories")
    return [
        (d.name, sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)) for d in ids
    ]


def read_image_folder(
    root, size: int | None = None, on_error: str = "raise", workers: int = 4
) -> LabeledImages:
    """Read root/<identity>/<image> into RGB uint8; ``names`` are "identity/file".

    ``on_error="raise"``: an unreadable image or an identity without images raises
    ValueError naming it. ``on_error="skip"``: such images are skipped and identities left
    empty are dropped (labels stay contiguous over the remaining sorted identities); the
    losses are listed in ``report["skipped"]`` ((path, reason) pairs) and
    ``report["empty_identities"]``. ``report["class_names"][label]`` is the directory name.
    Images of different sizes need ``size`` (square resize, see ``resize_images``).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    listing = list_image_folder(root)
    flat = [(ident, p) for ident, files in listing for p in files]

    def load(p):
        try:
            return load_image_file(p, size), None
        except ValueError as e:
            if on_error == "raise":
                raise
            return None, str(e)

    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes without the GIL
        decoded = list(pool.map(load, [p for _, p in flat]))
    skipped = [(str(p), err) for (_, p), (_, err) in zip(flat, decoded) if err is not None]
    kept = {ident for (ident, _), (img, _) in zip(flat, decoded) if img is not None}
    empty = [ident for ident, _ in listing if ident not in kept]
    if empty and on_error == "raise":
        raise ValueError(f"{Path(root) / empty[0]}: identity has no readable images")
    class_names = [ident for ident, _ in listing if ident in kept]
    label_of = {ident: k for k, ident in enumerate(class_names)}
    images, labels, names = [], [], []
    for (ident, p), (img, _) in zip(flat, decoded):
        if img is not None:
            images.append(img)
            labels.append(label_of[ident])
            names.append(f"{ident}/{p.name}")
    x = stack_images(images, size, str(root))
    report = {"skipped": skipped, "empty_identities": empty, "class_names": class_names}
    return LabeledImages(x, torch.tensor(labels, dtype=torch.long), names, len(class_names), report)


def write_image_folder(root, data: LabeledImages, names: list[str] | None = None) -> Path:
    """Write ``data`` as root/<class name>/<index>.png (lossless).

    ``names[label]`` names each class directory; by default zero-padded label numbers, so
    sorting the directory names gives back the label order and ``read_image_folder``
    round-trips exactly when every class has an image (classes without images get no
    directory, so later labels would shift down; with custom names the labels follow their
    sorted order).
    """
    root = Path(root)
    k = int(data.num_classes)
    if names is None:
        width = max(5, len(str(k - 1)))
        names = [f"{c:0{width}d}" for c in range(k)]
    if len(names) < k or len(set(names)) != len(names):
        raise ValueError(f"names must be {k} distinct class names, got {len(names)}")
    counters = [0] * k
    for c in sorted(set(data.labels.tolist())):
        (root / names[c]).mkdir(parents=True, exist_ok=True)
    for img, y in zip(data.images, data.labels.tolist()):
        path = root / names[y] / f"{counters[y]:06d}.png"
        counters[y] += 1
        path.write_bytes(encode_image(img, "png"))
    return root
