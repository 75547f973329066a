"""Stage ``data``: load D_orig, check it, split it, and write the evaluation benchmarks.

Outputs: ``train.safetensors`` (D_orig, labels 0..N-1), ``benchmarks.json`` +
``bench_<name>.safetensors``, ``split.json``.
ORL: the last ``unseen_identities`` identities only give verification pairs
and an identification set (never trained on); each training identity keeps
``heldout_per_identity`` images aside as rank-1 probes against its training images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from auggen.data.types import LabeledImages
from auggen.pipeline.stage import write_json
from auggen.pipeline.store import save_atomic, save_images


def load_source(d) -> LabeledImages:
    """The raw dataset named by a DataConfig (images at ``image_size`` when > 0)."""
    size = d.image_size or None
    if d.source == "orl":
        from auggen.data import load_orl

        return load_orl(size=size)
    path = Path(d.path)
    if d.source == "folder":
        if not path.is_dir():
            raise FileNotFoundError(
                f"data.path {str(path)!r}: no such folder (an image folder "
                "with one sub-folder per identity was expected)"
            )
        from auggen.data import read_image_folder

        return read_image_folder(path, size=size, on_error=d.on_error)
    from auggen.data import read_recordio

    return read_recordio(d.path, size=size, on_error=d.on_error)


def relabel(data: LabeledImages, keep: list[int]) -> LabeledImages:
    """Images of the classes ``keep`` (in that order), labels renumbered 0..len(keep)-1."""
    lut = torch.full((int(data.labels.max()) + 1,), -1, dtype=torch.long)
    lut[torch.tensor(keep, dtype=torch.long)] = torch.arange(len(keep))
    new = lut[data.labels]
    idx = (new >= 0).nonzero().flatten()
    sub = data.subset(idx)
    return LabeledImages(sub.images, new[idx], sub.names, len(keep))


def check_identities(data: LabeledImages, d) -> list[int]:
    """Classes kept after the size checks; raises on one-image identities unless dropped."""
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    present = [c for c in range(data.num_classes) if counts[c] > 0]
    if d.max_identities:
        present = present[: d.max_identities]
    small = [c for c in present if counts[c] < d.min_images_per_identity]
    if small and not d.drop_small_identities:
        name = _class_name(data, small[0])
        raise ValueError(
            f"identity {name} has {int(counts[small[0]])} image(s), fewer than "
            f"data.min_images_per_identity={d.min_images_per_identity} ({len(small)} such "
            "identities); set data.drop_small_identities=true to drop them"
        )
    keep = [c for c in present if c not in set(small)]
    if len(keep) - d.unseen_identities < 2:
        raise ValueError(
            f"need at least two training identities, got {len(keep)} identities with "
            f"{d.unseen_identities} unseen ones (data.unseen_identities)"
        )
    return keep


def _class_name(data: LabeledImages, c: int) -> str:
    i = int((data.labels == c).nonzero()[0])
    name = data.names[i] if data.names else ""
    return f"{c} ({name.rsplit('/', 1)[0]})" if "/" in name else str(c)


def split_heldout(train: LabeledImages, per_id: int, seed: int):
    """(train part, held-out part): ``per_id`` random images of every identity set aside."""
    g = torch.Generator().manual_seed(seed)
    hold = []
    for c in range(train.num_classes):
        idx = (train.labels == c).nonzero().flatten()
        if per_id and len(idx) <= per_id:
            raise ValueError(
                f"identity {c} has {len(idx)} images; holding out data.heldout_per_identity="
                f"{per_id} needs at least {per_id + 1} (lower it, or drop small identities)"
            )
        hold.append(idx[torch.randperm(len(idx), generator=g)[:per_id]])
    mask = torch.zeros(len(train), dtype=torch.bool)
    mask[torch.cat(hold)] = True
    return train.subset((~mask).nonzero().flatten()), train.subset(mask.nonzero().flatten())


def run(cfg, in_dirs, out_dir: Path) -> None:
    d = cfg.data
    raw = load_source(d)
    if raw.num_classes < 2:
        raise ValueError(f"the dataset has {raw.num_classes} identity; AugGen needs at least two")
    keep = check_identities(raw, d)
    n_train = len(keep) - d.unseen_identities
    train_all = relabel(raw, keep[:n_train])
    train, heldout = split_heldout(train_all, d.heldout_per_identity, d.seed)
    save_images(train, out_dir / "train.safetensors")
    benches = []
    if len(heldout):
        save_atomic(
            {
                "gallery": train.images,
                "gallery_labels": train.labels,
                "probe": heldout.images,
                "probe_labels": heldout.labels,
            },
            out_dir / "bench_heldout_ident.safetensors",
        )
        benches.append(
            {
                "name": "heldout_ident",
                "kind": "identification",
                "file": "bench_heldout_ident.safetensors",
                "about": f"rank-1: {len(heldout)} held-out images of the "
                f"{n_train} training identities vs their training images",
            }
        )
    if d.unseen_identities:
        unseen = relabel(raw, keep[n_train:])
        benches += _unseen_benchmarks(unseen, d, out_dir)
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
            "unseen_identities": d.unseen_identities,
            "train_images": len(train),
            "heldout_images": len(heldout),
            "image_size": list(train.images.shape[-2:]),
            "report": getattr(raw, "report", None),
        },
    )


def _unseen_benchmarks(unseen: LabeledImages, d, out_dir: Path) -> list[dict]:
    from auggen.eval import make_verification_pairs

    benches = []
    a, b, same = make_verification_pairs(unseen.labels, d.verification_pairs, seed=d.seed)
    save_atomic(
        {"images": unseen.images, "idx_a": a, "idx_b": b, "issame": same},
        out_dir / "bench_unseen_verif.safetensors",
    )
    benches.append(
        {
            "name": "unseen_verif",
            "kind": "verification",
            "file": "bench_unseen_verif.safetensors",
            "about": f"{len(same)} pairs ({int(same.sum())} genuine) among the "
            f"{unseen.num_classes} unseen identities",
        }
    )
    # Identification among unseen identities: the first image of each is the gallery.
    first = torch.stack([(unseen.labels == c).nonzero()[0, 0] for c in range(unseen.num_classes)])
    rest = torch.ones(len(unseen), dtype=torch.bool)
    rest[first] = False
    save_atomic(
        {
            "gallery": unseen.images[first],
            "gallery_labels": unseen.labels[first],
            "probe": unseen.images[rest],
            "probe_labels": unseen.labels[rest],
        },
        out_dir / "bench_unseen_ident.safetensors",
    )
    benches.append(
        {
            "name": "unseen_ident",
            "kind": "identification",
            "file": "bench_unseen_ident.safetensors",
            "about": f"rank-1: {int(rest.sum())} probes of the {unseen.num_classes} "
            "unseen identities vs one gallery image each",
        }
    )
    return benches
