"""The generator streams its data: an ImageSource trains exactly like the same images in
memory, with or without DataLoader workers, and labels are one-hot encoded a batch at a time."""

import json

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from auggen.data import read_recordio, write_recordio
from auggen.data.source import RecordIOSource, TensorSource
from auggen.data.types import LabeledImages
from auggen.generator.data import GenStepBatches
from auggen.generator.train import GenTrainConfig, train_generator

MICRO = dict(preset="micro", resolution=8, batch_size=4, log_every=1, lr_rampup_steps=2)


def _images(n=6, size=12, classes=3):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return LabeledImages(imgs, torch.arange(n) % classes, [], classes)


def _recordio_source(tmp_path, data):
    rec = write_recordio(tmp_path / "train", data, fmt="png")  # lossless: same pixels back
    whole = read_recordio(rec)
    keys = [int(k) for k in whole.names]
    return RecordIOSource(rec, keys, whole.labels, whole.num_classes, whole.images.shape[-1]), whole


def _weights(out_dir):
    state = json.loads((out_dir / "checkpoint.json").read_text())
    return load_file(str(out_dir / state["tensors"]))


def test_a_recordio_source_trains_like_images_in_memory_with_or_without_workers(tmp_path):
    source, whole = _recordio_source(tmp_path, _images())
    cfg = GenTrainConfig(steps=3, **MICRO)
    train_generator(cfg, whole, tmp_path / "memory", progress=False)
    train_generator(cfg, source, tmp_path / "source", progress=False)
    workers = GenTrainConfig(steps=3, num_workers=2, **MICRO)
    train_generator(workers, source, tmp_path / "workers", progress=False)
    want = _weights(tmp_path / "memory")
    for run in ("source", "workers"):
        got = _weights(tmp_path / run)
        assert set(got) == set(want)
        for k in want:
            assert torch.equal(want[k], got[k]), (run, k)


def test_a_source_at_another_size_is_resized_per_batch_like_in_memory_images(tmp_path):
    data = _images(size=12)
    cfg = GenTrainConfig(steps=2, **MICRO)
    train_generator(cfg, data, tmp_path / "memory", progress=False)  # resized once to 8 px
    train_generator(cfg, TensorSource(data), tmp_path / "source", progress=False)  # 12 px
    a, b = _weights(tmp_path / "memory"), _weights(tmp_path / "source")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_step_batches_are_a_function_of_seed_step_and_rank():
    source = TensorSource(_images(n=10), 8)
    cfg = GenTrainConfig(steps=4, **dict(MICRO, batch_size=6))
    r0, r1 = (GenStepBatches(cfg, source, 3, rank, 2) for rank in (0, 1))
    whole = GenStepBatches(cfg, source, 3, 0, 1)
    a, b, w = r0(5), r1(5), whole(5)
    assert a["y"].shape == (3, 3, 8, 8)
    # Each rank holds its own slice of the one global batch.
    for key in ("y", "labels", "sigma", "noise"):
        assert torch.equal(torch.cat([a[key], b[key]]), w[key]), key
        assert torch.equal(r0(5)[key], a[key]), key
    assert not torch.equal(r0(6)["noise"], a["noise"])


def test_labels_are_one_hot_encoded_per_batch_never_for_the_whole_set(tmp_path, monkeypatch):
    calls = []
    one_hot = F.one_hot

    def spy(labels, num_classes=-1):
        calls.append((tuple(labels.shape), num_classes))
        return one_hot(labels, num_classes)

    monkeypatch.setattr(F, "one_hot", spy)
    classes = 100_000  # a dense N x classes one-hot of CASIA-sized data would not fit
    data = LabeledImages(_images().images, torch.tensor([0, 5, 99_999, 7, 5, 0]), [], classes)
    cfg = GenTrainConfig(steps=2, **MICRO)
    train_generator(cfg, data, tmp_path, progress=False)
    assert calls == [((4,), classes)] * 2
