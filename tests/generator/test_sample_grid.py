"""train_gen's sample grids: fixed seeds and classes, the EMA network, no effect on training."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from auggen.generator.sample_grid import GRID_SEEDS, grid_labels, sample_grid
from auggen.generator.train import GenTrainConfig, train_generator
from tests.generator.test_train import MICRO, _data, _tensors


def test_grid_labels_spread_over_the_classes():
    assert grid_labels(3) == [0, 1, 2]
    labels = grid_labels(30)
    assert len(labels) == 8 and labels[0] == 0 and labels[-1] == 29
    assert labels == sorted(set(labels))


def test_grids_every_n_steps_from_the_ema_network(tmp_path):
    cfg = GenTrainConfig(steps=4, checkpoint_every=100, sample_grid_every=2, **MICRO)
    ema = train_generator(cfg, _data(), tmp_path / "on", progress=False)
    names = sorted(p.name for p in (tmp_path / "on" / "samples").iterdir())
    assert names == ["step-0000002.png", "step-0000004.png"]
    last = np.asarray(Image.open(tmp_path / "on" / "samples" / "step-0000004.png"))
    scale = 64 // cfg.resolution
    # 4 classes x GRID_SEEDS images of 8 px, 2 px gaps, upscaled for viewing.
    assert last.shape == ((4 * 10 + 2) * scale, (GRID_SEEDS * 10 + 2) * scale, 3)
    # The last grid is the returned EMA network's, sampled again: same seeds, same classes.
    np.testing.assert_array_equal(last[::scale, ::scale], sample_grid(ema))
    first = np.asarray(Image.open(tmp_path / "on" / "samples" / "step-0000002.png"))
    assert not np.array_equal(first, last)  # the network moved between the two

    # Sampling draws no random numbers the training uses: the weights are those of a run
    # without grids.
    off = dataclasses.replace(cfg, sample_grid_every=0)
    train_generator(off, _data(), tmp_path / "off", progress=False)
    assert not (tmp_path / "off" / "samples").exists()
    (_, on_t), (_, off_t) = _tensors(tmp_path / "on"), _tensors(tmp_path / "off")
    assert set(on_t) == set(off_t)
    for k in on_t:
        assert torch.equal(on_t[k], off_t[k]), k


def test_negative_interval_is_refused():
    with pytest.raises(ValueError, match="sample_grid_every must be >= 0"):
        GenTrainConfig(sample_grid_every=-1)
