"""FR training streams its data: an ImageSource trains exactly like the same images in memory,
with or without DataLoader workers, and the checks read labels only."""

import pytest
import torch

from auggen.data import read_recordio, write_recordio
from auggen.data.source import FolderSource, RecordIOSource, TensorSource
from auggen.infra.runtime import Runtime as DistInfo
from auggen.recognition.batches import EpochBatches, check_data
from auggen.recognition.train import FRTrainConfig, train_fr
from tests.recognition.conftest import toy_faces

TINY = dict(backbone="ir18", width=8, input_size=32, embedding_size=32, batch_size=16)


def tiny(**kw) -> FRTrainConfig:
    return FRTrainConfig(**{**TINY, "milestones": (), **kw})


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_recordio_source_trains_like_images_in_memory_with_or_without_workers(tmp_path):
    rec = write_recordio(tmp_path / "train", toy_faces(), fmt="png")  # lossless
    whole = read_recordio(rec)
    keys = [int(k) for k in whole.names]
    source = RecordIOSource(rec, keys, whole.labels, whole.num_classes, 32)
    cfg = tiny(epochs=2, partial_fc_rate=0.5)
    want = train_fr(cfg, whole, tmp_path / "memory", progress=False).state_dict()
    _assert_same(want, train_fr(cfg, source, tmp_path / "source", progress=False).state_dict())
    workers = tiny(epochs=2, partial_fc_rate=0.5, num_workers=2)
    got = train_fr(workers, source, tmp_path / "workers", progress=False).state_dict()
    _assert_same(want, got)


def test_a_source_at_another_size_is_resized_per_batch_like_images_in_memory(tmp_path):
    data = toy_faces(size=40)
    cfg = tiny(epochs=1)
    want = train_fr(cfg, data, tmp_path / "memory", progress=False).state_dict()  # resized once
    got = train_fr(cfg, TensorSource(data), tmp_path / "source", progress=False).state_dict()
    _assert_same(want, got)


def test_ranks_take_disjoint_slices_of_the_epoch_permutation():
    source = TensorSource(toy_faces(per_class=8), 32)  # 32 images
    cfg = tiny(batch_size=8)  # global: 4 per rank
    ranks = [EpochBatches(source, cfg, 1, DistInfo(r, 2), 4, False) for r in (0, 1)]
    seen = torch.cat([torch.cat([r.index[s] for s in range(4)]) for r in ranks])
    assert sorted(seen.tolist()) == list(range(32))
    x, y = ranks[1](2)
    assert x.dtype == torch.uint8 and torch.equal(y, source.labels[ranks[1].index[2]])
    again = EpochBatches(source, cfg, 1, DistInfo(1, 2), 4, False)
    assert torch.equal(again(2)[0], x)
    other_epoch = EpochBatches(source, cfg, 2, DistInfo(1, 2), 4, False)
    assert not torch.equal(other_epoch.index, ranks[1].index)


def test_check_data_reads_labels_only(tmp_path):
    labels = torch.tensor([0, 1, 1, 2])
    missing = FolderSource(tmp_path, [f"{i}.png" for i in range(4)], labels, 3, 32)
    check_data(missing)  # the files do not exist: nothing was read
    with pytest.raises(ValueError, match="1 classes have no images"):
        check_data(FolderSource(tmp_path, ["a.png"] * 4, labels, 4, 32))
    with pytest.raises(ValueError, match="cannot read image"):
        missing.read([0])
