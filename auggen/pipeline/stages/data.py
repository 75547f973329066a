"""Stage ``data``: index D_orig, check it, split it, and write the evaluation benchmarks.

Writes indexes, not pixels (``auggen.data.index``): ``train.index.json`` (D_orig, labels
0..N-1), ``heldout.index.json`` / ``unseen*.index.json`` for the benchmarks, each a JSON file
plus a small safetensors of integer arrays pointing into the RecordIO file or image folder
given as ``--data``. In-memory sources (the ORL demo) are written once as
``images.safetensors`` and indexed like the others. Also ``benchmarks.json`` (the
benchmarks and which index files and pair lists they use), ``bench_unseen_verif.safetensors``
(verification pairs) and ``split.json``.

ORL: the last ``unseen_identities`` identities only give verification pairs and an
identification set (never trained on); each training identity keeps
``heldout_per_identity`` images aside as rank-1 probes against its training images.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from auggen.data.dataset import open_dataset
from auggen.data.index import TensorFileSource, write_index, write_tensor_file
from auggen.data.source import ImageSource, SubsetSource
from auggen.data.split import (
    available_pairs,
    check_identities,
    choose_unseen,
    relabel,
    split_heldout,
)
from auggen.eval import make_verification_pairs
from auggen.pipeline.stage import write_json
from auggen.pipeline.store import save_atomic

VERIFY_CHUNK = 512  # images decoded per chunk of the verification pass


def open_source(d, out_dir: Path) -> tuple[ImageSource, dict]:
    """The raw dataset named by a DataConfig as an ImageSource at ``image_size``, + notes.
    In-memory ORL is written to ``images.safetensors`` first and read from there."""
    ds = open_dataset(d.path, d.image_size or None, d.source)
    if ds.kind == "orl":
        data = ds.images
        write_tensor_file(out_dir / "images.safetensors", data.images)
        src = TensorFileSource(
            out_dir / "images.safetensors", range(len(data)), data.labels, data.num_classes
        )
        return src, {"repaired": ds.notes.get("repaired", []), "skipped": []}
    return ds.source, ({"class_names": ds.class_names} if ds.kind == "folder" else {})


def unreadable(src: ImageSource, workers: int = 4) -> list[tuple[int, str]]:
    """(index, reason) of every image that fails to decode; one chunk in memory at a time."""

    def check(i: int):
        try:
            src.read_one(i)
            return None
        except ValueError as e:
            return i, str(e)

    bad = []
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes without the GIL
        for lo in range(0, len(src), VERIFY_CHUNK):
            chunk = range(lo, min(lo + VERIFY_CHUNK, len(src)))
            bad += [r for r in pool.map(check, chunk) if r is not None]
    return bad


def drop_unreadable(src: ImageSource, d, notes: dict) -> ImageSource:
    """Decode every image once (``data.verify_images``): raise on the first bad one, or drop
    them all (``data.on_error=skip``) and list them in the notes."""
    if not d.verify_images or isinstance(src, TensorFileSource):
        return src
    bad = unreadable(src, d.workers or 4)
    if not bad:
        return src
    if d.on_error == "raise":
        raise ValueError(
            f"{bad[0][1]} ({len(bad)} unreadable image(s); data.on_error=skip drops them)"
        )
    notes["skipped"] = [(src.name(i), why) for i, why in bad]
    keep = np.setdiff1d(np.arange(len(src)), [i for i, _ in bad])
    return SubsetSource(src, keep)


def _class_namer(src: ImageSource, notes: dict):
    def name(c: int) -> str:
        names = notes.get("class_names")
        if names:
            return f"{c} ({names[c]})"
        i = int((src.labels == c).nonzero()[0])
        return f"{c} ({src.name(i)})"

    return name


def run(cfg, in_dirs, out_dir: Path, rt) -> None:
    d = cfg.data
    raw, notes = open_source(d, out_dir)
    if raw.num_classes < 2:
        raise ValueError(f"the dataset has {raw.num_classes} identity; AugGen needs at least two")
    raw = drop_unreadable(raw, d, notes)
    keep = check_identities(raw.labels, raw.num_classes, d, _class_namer(raw, notes))
    n_unseen, split_note = choose_unseen(len(keep), d)
    if split_note:
        print(f"[data] {split_note}", flush=True)
        notes["split"] = split_note
    n_train = len(keep) - n_unseen
    idx, labels = relabel(raw.labels, keep[:n_train])
    tr, ho = split_heldout(labels, n_train, d.heldout_per_identity, d.seed)
    train = _subset(raw, idx[tr], labels[tr], n_train)
    write_index(out_dir / "train.index.json", train)
    benches = []
    if len(ho):
        write_index(out_dir / "heldout.index.json", _subset(raw, idx[ho], labels[ho], n_train))
        benches.append(
            {
                "name": "heldout_ident",
                "kind": "identification",
                "gallery": "train.index.json",
                "probe": "heldout.index.json",
                "about": f"rank-1: {len(ho)} held-out images of the "
                f"{n_train} training identities vs their training images",
            }
        )
    pairs = {}
    if n_unseen:
        u_idx, u_labels = relabel(raw.labels, keep[n_train:])
        unseen = _subset(raw, u_idx, u_labels, n_unseen)
        benches += _unseen_benchmarks(raw, u_idx, u_labels, unseen, d, out_dir, pairs)
    for path in d.verification_bins:
        if not Path(path).exists():
            raise FileNotFoundError(f"data.verification_bins: {path}: no such file")
        benches.append(
            {
                "name": Path(path).stem,
                "kind": "verification_bin",
                "file": str(path),
                "about": f"insightface verification pairs from {path}",
            }
        )
    write_json(out_dir / "benchmarks.json", benches)
    write_json(
        out_dir / "split.json",
        {
            "source": d.source,
            "identities": len(keep),
            "train_identities": n_train,
            "unseen_identities": n_unseen,
            "unseen_split": "proportional" if split_note else "config",
            "verification_pairs": pairs,
            "train_images": len(tr),
            "heldout_images": len(ho),
            "image_size": [train.size, train.size],
            "report": {k: v for k, v in notes.items() if k != "class_names"},
        },
    )


def _subset(raw: ImageSource, idx, labels, num_classes: int) -> ImageSource:
    if isinstance(raw, SubsetSource):  # unreadable images were dropped: index the base
        return SubsetSource(raw.base, raw.index[np.asarray(idx)], labels, num_classes)
    return SubsetSource(raw, idx, labels, num_classes)


def _unseen_benchmarks(raw, u_idx, u_labels, unseen, d, out_dir: Path, pairs) -> list[dict]:
    benches = []
    write_index(out_dir / "unseen.index.json", unseen)
    genuine, impostor = available_pairs(unseen.labels)
    # Few unseen identities allow few pairs: take what there is rather than fail.
    wanted = d.verification_pairs
    n_pairs = min(wanted, 2 * genuine + 1, 2 * impostor)  # half genuine (rounded down)
    pairs.update(
        requested=wanted, used=n_pairs, genuine_available=genuine, impostor_available=impostor
    )
    a, b, same = make_verification_pairs(unseen.labels, n_pairs, seed=d.seed)
    save_atomic(
        {"idx_a": a, "idx_b": b, "issame": same}, out_dir / "bench_unseen_verif.safetensors"
    )
    benches.append(
        {
            "name": "unseen_verif",
            "kind": "verification",
            "images": "unseen.index.json",
            "pairs": "bench_unseen_verif.safetensors",
            "about": f"{len(same)} pairs ({int(same.sum())} genuine) among the "
            f"{unseen.num_classes} unseen identities",
        }
    )
    # Identification among unseen identities: the first image of each is the gallery.
    n = unseen.num_classes
    first = torch.stack([(u_labels == c).nonzero()[0, 0] for c in range(n)])
    rest = torch.ones(len(u_labels), dtype=torch.bool)
    rest[first] = False
    rest = rest.nonzero().flatten()
    write_index(
        out_dir / "unseen_gallery.index.json", _subset(raw, u_idx[first], u_labels[first], n)
    )
    write_index(out_dir / "unseen_probe.index.json", _subset(raw, u_idx[rest], u_labels[rest], n))
    benches.append(
        {
            "name": "unseen_ident",
            "kind": "identification",
            "gallery": "unseen_gallery.index.json",
            "probe": "unseen_probe.index.json",
            "about": f"rank-1: {len(rest)} probes of the {n} unseen identities vs one "
            "gallery image each",
        }
    )
    return benches
