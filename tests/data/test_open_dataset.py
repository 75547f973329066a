"""auggen.data.open_dataset: one rule for what dataset is at a path, and each kind opens to
the same images and labels as its own reader."""

import numpy as np
import pytest
import torch

from auggen.data import (
    LabeledImages,
    read_image_folder,
    write_image_folder,
    write_recordio,
    write_verification_bin,
)
from auggen.data.dataset import dataset_kind, dataset_size, locate_dataset, open_dataset


def _faces(classes=3, per=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (classes * per, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(classes).repeat_interleave(per)
    return LabeledImages(images, labels, [f"im{i}" for i in range(len(labels))])


def test_recordio_by_every_spelling(tmp_path):
    data = _faces()
    write_recordio(tmp_path / "ds" / "train", data, fmt="png")
    for spelling in ("ds/train.rec", "ds/train.idx", "ds/train", "ds"):
        p = tmp_path / spelling
        assert dataset_kind(p) == "recordio", spelling
        ds = open_dataset(p)
        assert ds.kind == "recordio" and len(ds.source) == len(data)
        assert torch.equal(ds.source.read(range(len(data))), data.images)
        assert torch.equal(ds.source.labels, data.labels)
    loc = locate_dataset(tmp_path / "ds")
    assert loc.rec == tmp_path / "ds" / "train.rec" and loc.idx.suffix == ".idx"
    n, _, _ = dataset_size(tmp_path / "ds")
    assert n >= len(data)  # the .idx lines, the meta record included when written


def test_folder_with_one_rec_of_another_name(tmp_path):
    write_recordio(tmp_path / "ds" / "faces", _faces(), fmt="png")
    assert dataset_kind(tmp_path / "ds") == "recordio"
    assert locate_dataset(tmp_path / "ds").rec == tmp_path / "ds" / "faces.rec"


def test_image_folder_matches_its_reader(tmp_path):
    data = _faces(classes=4, per=3)
    write_image_folder(tmp_path / "f", data)
    ds = open_dataset(tmp_path / "f")
    ref = read_image_folder(tmp_path / "f")
    assert ds.kind == "folder" and ds.class_names == sorted(ds.class_names)
    assert torch.equal(ds.source.read(range(len(ref))), ref.images)
    assert torch.equal(ds.source.labels, ref.labels)
    assert dataset_size(tmp_path / "f")[:2] == (12, 4)


def test_verification_bin(tmp_path):
    data = _faces(classes=4, per=2)
    same = np.array([True, False, True, False])
    write_verification_bin(tmp_path / "v.bin", data.images, same, fmt="png")
    ds = open_dataset(tmp_path / "v.bin", 16)
    assert ds.kind == "verification_bin" and np.array_equal(ds.issame, same)
    assert torch.equal(ds.source.read(range(8)), data.images)
    with pytest.raises(ValueError, match="not a training set"):
        dataset_size(tmp_path / "v.bin")


def test_orl_counts_are_measured():
    n, classes, _ = dataset_size(None, "orl")
    assert (n, classes) == (400, 40)
    ds = open_dataset("orl", 32)
    assert ds.kind == "orl" and len(ds.source) == 400 and ds.source.size == 32


def test_missing_and_unknown(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no such verification .bin"):
        open_dataset(tmp_path / "nope.bin", 16)
    with pytest.raises(ValueError, match="dataset kind must be one of"):
        open_dataset(tmp_path, kind="lmdb")
