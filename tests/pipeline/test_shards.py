"""Generated RecordIO shards re-read to the same pixels and labels, alone, as a view, merged,
and through the insightface loader's own logic (record 0 -> image keys 1..a-1)."""

import mmap

import torch

from auggen.data import read_recordio
from auggen.data.index import open_index
from auggen.data.recordio import merge_recordio, read_index, read_record, unpack_payload
from auggen.pipeline.stages.shards import index_shards, shard_done, write_shard


def _insightface_style_read(rec):
    """What arcface_torch's MXFaceDataset does: header of key 0 gives (a, b), images are keys
    1..a-1, each label is header.label (label[0] when several)."""
    index = read_index(rec.with_suffix(".idx"))
    out = []
    with open(rec, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        head, _ = unpack_payload(read_record(buf, index[0])[0])
        for key in range(1, int(head.label[0])):
            h, body = unpack_payload(read_record(buf, index[key])[0])
            label = h.label[0] if h.flag > 0 else h.label
            out.append((int(label), body))
    return out


def test_shards_round_trip_as_a_view_and_merged(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.tensor([5, 5, 5, 6, 6, 7, 7, 7, 8, 8])  # new identities after 5 originals
    prefixes = [tmp_path / "shard00000", tmp_path / "shard00001"]
    write_shard(prefixes[0], images[:5], labels[:5], 9, {"manifest": [{"n": 0}]})
    assert shard_done(prefixes[0]) and not shard_done(prefixes[1])
    write_shard(prefixes[1], images[5:], labels[5:], 9, {"manifest": [{"n": 1}]})
    src, sidecars = index_shards(prefixes, 9, 16, tmp_path / "aug.index.json")
    assert [s["manifest"][0]["n"] for s in sidecars] == [0, 1]
    back = open_index(tmp_path / "aug.index.json")
    assert torch.equal(back.read(range(10)), images)  # PNG records: lossless
    assert torch.equal(back.labels, labels) and back.num_classes == 9
    # Each shard on its own is an insightface RecordIO, and so is the merged file.
    rec = merge_recordio([p.with_suffix(".rec") for p in prefixes], tmp_path / "aug", 9)
    merged = read_recordio(rec)
    assert torch.equal(merged.images, images) and torch.equal(merged.labels, labels)
    seen = _insightface_style_read(rec)
    assert [y for y, _ in seen] == labels.tolist()
    first = _insightface_style_read(prefixes[1].with_suffix(".rec"))
    assert [y for y, _ in first] == labels[5:].tolist()
