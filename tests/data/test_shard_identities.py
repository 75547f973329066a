"""A shard's identity records cover the identities it holds (its .idx grows with its images,
not with the dataset's class count); the views over shards keep the global label space, and
shards written the old way (one identity record per class of the set) still read the same."""

import mmap

import torch

from auggen.data import LabeledImages, read_recordio, write_recordio
from auggen.data.index import open_index
from auggen.data.recordio import (
    merge_recordio,
    read_index,
    read_record,
    scan_recordio,
    unpack_payload,
)
from auggen.pipeline.stages.shards import RECORD_FORMAT, index_shards, write_shard

CLASSES = 2000  # the dataset's identities; each shard holds 2 of them


def _identity_records(rec):
    """{key: (start, end)} of the identity records, read the way insightface's old id2range
    loader does: keys a..b-1 after record 0's (a, b)."""
    index = read_index(rec.with_suffix(".idx"))
    with open(rec, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        head, _ = unpack_payload(read_record(buf, index[0])[0])
        a, b = (int(v) for v in head.label[:2])
        out = {}
        for key in range(a, b):
            h, _ = unpack_payload(read_record(buf, index[key])[0])
            out[key] = tuple(int(v) for v in h.label)
    return a, b, out


def _old_shard(prefix, images, labels, num_classes, meta):
    """How shards were written before: an identity record for every class of the set."""
    from auggen.infra.files import atomic_write_json

    data = LabeledImages(images, torch.as_tensor(labels), [], num_classes)
    write_recordio(prefix, data, fmt=RECORD_FORMAT, write_property=False)
    atomic_write_json(prefix.with_suffix(".json"), {"count": len(data), **meta})


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)


def test_a_shard_holds_only_its_identities(tmp_path):
    images = _images(5)
    labels = torch.tensor([1500, 1500, 1500, 1501, 1501])
    prefix = tmp_path / "part00000"
    write_shard(prefix, images, labels, CLASSES, {})
    idx = prefix.with_suffix(".idx").read_text().splitlines()
    assert len(idx) == 1 + 5 + 2  # meta record, images, the 2 identities held
    a, b, ids = _identity_records(prefix.with_suffix(".rec"))
    assert (a, b) == (6, 8) and ids == {6: (1, 4), 7: (4, 6)}  # image keys of each identity
    back = read_recordio(prefix)
    assert torch.equal(back.images, images) and torch.equal(back.labels, labels)
    assert scan_recordio(prefix).num_classes == 1502  # max label + 1
    # The old layout: one record per class of the set, its size grows with CLASSES.
    _old_shard(tmp_path / "old", images, labels, CLASSES, {})
    assert len((tmp_path / "old.idx").read_text().splitlines()) == 1 + 5 + CLASSES
    new_size = prefix.with_suffix(".rec").stat().st_size
    assert new_size < (tmp_path / "old.rec").stat().st_size / 10


def test_old_and_new_shards_make_the_same_views(tmp_path):
    images = _images(12, seed=1)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4]) + 1990
    cuts = [0, 5, 9, 12]  # three shards: ids 1990-1991, 1992-1993, 1994
    views = {}
    for kind, write in (("new", write_shard), ("old", _old_shard), ("mixed", None)):
        prefixes = [tmp_path / kind / f"shard{s:05d}" for s in range(3)]
        prefixes[0].parent.mkdir()
        for s, p in enumerate(prefixes):
            w = write or (write_shard if s % 2 else _old_shard)  # a resumed old run
            sl = slice(cuts[s], cuts[s + 1])
            w(p, images[sl], labels[sl], CLASSES, {"shard": s})
        src, sidecars = index_shards(prefixes, CLASSES, 8, tmp_path / kind / "aug.index.json")
        assert [c["shard"] for c in sidecars] == [0, 1, 2]
        view = open_index(tmp_path / kind / "aug.index.json")
        assert view.num_classes == CLASSES  # the global label space
        assert torch.equal(view.labels, labels) and torch.equal(view.read(range(12)), images)
        merged = read_recordio(merge_recordio(prefixes, tmp_path / kind / "aug.rec", CLASSES))
        assert merged.num_classes == CLASSES and torch.equal(merged.labels, labels)
        assert torch.equal(merged.images, images)
        views[kind] = merged
    assert all(torch.equal(v.images, views["new"].images) for v in views.values())
