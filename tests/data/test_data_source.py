"""Image sources read the same pixels and labels as the in-memory readers, a batch at a time."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from auggen.data import read_image_folder, read_recordio, write_recordio
from auggen.data.recordio import read_index
from auggen.data.source import (
    ConcatSource,
    FolderSource,
    RecordIOSource,
    SubsetSource,
    TensorSource,
    as_source,
)
from auggen.data.types import LabeledImages


def _images(n=12, classes=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return LabeledImages(x, torch.arange(n) % classes, [], classes)


def test_recordio_source_matches_the_in_memory_reader(tmp_path):
    data = _images()
    rec = write_recordio(tmp_path / "train", data, fmt="png")
    whole = read_recordio(rec)
    index = read_index(rec.with_suffix(".idx"))
    keys = [int(k) for k in whole.names]
    src = RecordIOSource(rec, keys, whole.labels, whole.num_classes, 16)
    assert index and len(src) == len(whole)
    assert torch.equal(src.read(range(len(src))), whole.images)
    assert torch.equal(src.labels, whole.labels)
    order = torch.tensor([5, 0, 11, 5])
    assert torch.equal(src.read(order), whole.images[order])
    # Picklable for DataLoader workers: the memory map is reopened, not copied.
    back = pickle.loads(pickle.dumps(src))
    assert torch.equal(back.read([3]), whole.images[[3]])
    with pytest.raises(IndexError, match="out of range"):
        src.read([len(src)])


def test_folder_source_matches_the_folder_reader(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(3):
        (tmp_path / f"id{k}").mkdir()
        for i in range(2 + k):
            h, w = 20 + i, 18 + k  # mixed sizes, resized on read
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                tmp_path / f"id{k}" / f"{i}.png"
            )
    whole = read_image_folder(tmp_path, size=16)
    src = FolderSource(tmp_path, whole.names, whole.labels, whole.num_classes, 16)
    assert torch.equal(src.read(range(len(src))), whole.images)
    (tmp_path / whole.names[1]).unlink()
    with pytest.raises(ValueError, match="cannot read image"):
        src.read([1])


def test_subset_concat_and_tensor_sources():
    a, b = _images(seed=1), _images(n=6, seed=2)
    b = LabeledImages(b.images, b.labels + 3, [], 6)
    ta, tb = as_source(a), TensorSource(b)
    sub = SubsetSource(ta, [4, 1, 7], labels=[0, 1, 0], num_classes=2)
    assert torch.equal(sub.read([0, 2]), a.images[[4, 7]]) and sub.num_classes == 2
    both = ConcatSource([ta, tb])
    assert len(both) == 18 and both.num_classes == 6
    idx = [17, 0, 12, 3]
    want = torch.cat([a.images, b.images])[idx]
    assert torch.equal(both.read(idx), want)
    assert torch.equal(both.labels, torch.cat([a.labels, b.labels]))
    assert torch.equal(both.read_one(13), b.images[1])
    assert TensorSource(a, 8).read([0]).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="different sizes"):
        ConcatSource([ta, TensorSource(b, 8)])


def test_index_files_round_trip_every_kind(tmp_path):
    from auggen.data.index import TensorFileSource, open_index, write_index, write_tensor_file

    data = _images(n=10, classes=5)
    rec = write_recordio(tmp_path / "r" / "train", data, fmt="png")
    whole = read_recordio(rec)
    rsrc = RecordIOSource(rec, [int(k) for k in whole.names], whole.labels, 5, 16)
    write_tensor_file(tmp_path / "img.safetensors", data.images)
    tsrc = TensorFileSource(tmp_path / "img.safetensors", range(10), data.labels, 5)
    folder = tmp_path / "f"
    for i in range(4):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(folder / f"c{i % 2}/{i}.png")
    fwhole = read_image_folder(folder)
    fsrc = FolderSource(folder, fwhole.names, fwhole.labels, 2, 16)
    cases = {
        "rec": SubsetSource(rsrc, [7, 2, 3], labels=[0, 1, 1], num_classes=2),
        "tensors": SubsetSource(tsrc, [9, 0], labels=[1, 0], num_classes=2),
        "folder": SubsetSource(fsrc, [3, 1]),
        "concat": ConcatSource([rsrc, tsrc, fsrc], num_classes=7),
    }
    for name, src in cases.items():
        path = write_index(tmp_path / f"{name}.json", src)
        back = open_index(path)
        assert type(back).__name__ != "SubsetSource"  # subsets are flattened on disk
        assert len(back) == len(src) and back.num_classes == src.num_classes, name
        assert torch.equal(back.labels, src.labels), name
        assert torch.equal(back.read(range(len(src))), src.read(range(len(src)))), name
    # The index is small: arrays and a file list, never pixels of RecordIO or folder sets.
    assert (tmp_path / "rec.arrays.safetensors").stat().st_size < 1000
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    import auggen.data.index as index

    with pytest.raises(ValueError, match="not an auggen dataset index"):
        index.open_index(tmp_path / "bad.json")


def test_small_sets_are_held_in_memory_with_the_same_pixels(tmp_path):
    from auggen.data.source import in_memory_if_small

    data = _images()
    rec = write_recordio(tmp_path / "train", data, fmt="png")
    whole = read_recordio(rec)
    src = RecordIOSource(rec, [int(k) for k in whole.names], whole.labels, 3, 16)
    held = in_memory_if_small(src)
    assert isinstance(held, TensorSource) and torch.equal(held.read(range(12)), whole.images)
    assert in_memory_if_small(src, limit=12 * 3 * 16 * 16 - 1) is src  # too big: streamed
    assert held.names == [] and [held.name(i) for i in range(12)] == [
        src.name(i) for i in range(12)
    ]  # names come from the source, no per-image strings are held
    # Filled a batch at a time (odd batch sizes, a last short batch): the same as one read.
    for batch in (1, 5, 12, 100):
        got = src.to_images(batch=batch, names=False)
        assert torch.equal(got.images, whole.images) and got.names == []
    assert src.to_images(batch=5).names == [src.name(i) for i in range(12)]


def _mapped_rss_kb(path) -> int | None:
    """Resident kB of this process's maps of ``path`` (Linux /proc/self/smaps)."""
    try:
        lines = open("/proc/self/smaps").read().splitlines()
    except OSError:
        return None
    total, inside = 0, False
    for line in lines:
        if line and "-" in line.split()[0] and len(line.split()) >= 5:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_reading_a_recordio_does_not_keep_its_pages_resident(tmp_path):
    data = _images(n=400, classes=10, size=64, seed=3)  # ~5 MB of PNG records
    rec = write_recordio(tmp_path / "big", data, fmt="png")
    whole = read_recordio(rec)
    src = RecordIOSource(rec, [int(k) for k in whole.names], whole.labels, 10, 64)
    assert torch.equal(src.read(range(400)), whole.images)
    rss = _mapped_rss_kb(rec)
    if rss is None:
        pytest.skip("no /proc/self/smaps")
    assert rec.stat().st_size > 4 << 20
    assert rss < 256  # a page or two per open map, not the 5 MB just read


def test_positioned_reads_handle_long_records_and_name_bad_offsets(tmp_path, monkeypatch):
    import auggen.data.recordio as recordio

    data = _images(n=4, classes=2, size=32, seed=4)
    rec = write_recordio(tmp_path / "t", data, fmt="png")
    whole = read_recordio(rec)
    monkeypatch.setattr(recordio, "READ_CHUNK", 64)  # every record is longer than a chunk
    src = RecordIOSource(rec, [int(k) for k in whole.names], whole.labels, 2, 32)
    assert torch.equal(src.read(range(4)), whole.images)
    src.offsets[1] += 4  # an .idx offset that does not point at a record
    with pytest.raises(ValueError, match=r"key 2: bad magic .*record at byte"):
        src.read([1])
    src.offsets[1] = rec.stat().st_size + 10
    with pytest.raises(ValueError, match="outside the file"):
        src.read([1])
