import dataclasses
import json

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from auggen.data.types import LabeledImages
from auggen.generator import build_unet
from auggen.generator.checkpoint import load_checkpoint
from auggen.generator.loading import load_posthoc_generator, load_weights
from auggen.generator.train import (
    GenTrainConfig,
    load_generator,
    prepare_images,
    train_generator,
)
from auggen.infra.training_guard import TrainingDiverged


def _data(n=4, size=12, classes=4):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return LabeledImages(imgs, torch.arange(n) % classes)


# fp32 pinned: these tests check the loop's mechanics, the same on every CPU (precision
# "auto" follows the hardware; tests/generator/test_precision.py covers bf16)
MICRO = dict(
    preset="micro", resolution=8, batch_size=4, log_every=1, lr_rampup_steps=2, precision="fp32"
)


def _tensors(out_dir):
    state = json.loads((out_dir / "checkpoint.json").read_text())
    return state, load_file(str(out_dir / state["tensors"]))


def test_prepare_images():
    x = prepare_images(torch.tensor([0, 255, 128], dtype=torch.uint8).reshape(1, 3, 1, 1), 1)
    torch.testing.assert_close(x.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]))
    y = prepare_images(_data(size=16).images, 8)
    assert y.shape == (4, 3, 8, 8) and y.min() >= -1 and y.max() <= 1


def test_resume_is_exact(tmp_path):
    data = _data()
    full = GenTrainConfig(steps=6, checkpoint_every=100, **MICRO)
    train_generator(full, data, tmp_path / "a", progress=False)
    train_generator(
        GenTrainConfig(steps=3, checkpoint_every=100, **MICRO), data, tmp_path / "b", progress=False
    )
    train_generator(full, data, tmp_path / "b", progress=False)
    (sa, ta), (sb, tb) = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    assert sa["step"] == sb["step"] == 6
    assert set(ta) == set(tb) and any(k.startswith("opt.") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert [h["loss"] for h in sa["history"]] == [h["loss"] for h in sb["history"]]
    assert sa["loss_guard"] == sb["loss_guard"] and len(sa["loss_guard"]["recent"]) == 6
    hist = json.loads((tmp_path / "b" / "history.json").read_text())
    assert [h["step"] for h in hist] == list(range(1, 7))
    assert (tmp_path / "b" / "history.csv").read_text().startswith("step,kimg,loss")


def test_load_generator_and_bad_checkpoints(tmp_path):
    data = _data()
    cfg = GenTrainConfig(steps=2, snapshot_every=1, **MICRO)
    ema = train_generator(cfg, data, tmp_path, progress=False)
    net = load_generator(tmp_path)
    assert not net.training and net.label_dim == 4 and net.img_resolution == 8
    for (k, a), b in zip(ema.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k
    ph = load_posthoc_generator(tmp_path, std=0.08)
    assert all(torch.isfinite(p).all() for p in ph.parameters())

    with pytest.raises(ValueError, match="preset='micro'"):
        train_generator(
            GenTrainConfig(**dict(MICRO, preset="tiny"), steps=3), data, tmp_path, progress=False
        )
    with pytest.raises(ValueError, match="label_dim"):
        train_generator(
            GenTrainConfig(steps=3, label_dim=7, **MICRO), data, tmp_path, progress=False
        )
    with pytest.raises(ValueError, match="preset"):
        load_generator(tmp_path, preset="tiny")
    with pytest.raises(ValueError, match="another preset"):
        load_weights(build_unet("tiny", 8, 4), net.state_dict())
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_generator(tmp_path / "nothing")
    with pytest.raises(ValueError, match="preset must be one of"):
        GenTrainConfig(preset="nope")
    with pytest.raises(ValueError, match="label_dim=2"):
        train_generator(
            GenTrainConfig(steps=1, label_dim=2, **MICRO), data, tmp_path / "x", progress=False
        )


def test_bf16_snapshots_are_bounded_and_read_beside_fp32_ones(tmp_path):
    data = _data()
    fp32 = GenTrainConfig(
        steps=4, snapshot_every=1, snapshot_dtype="float32", max_snapshots=3, **MICRO
    )
    train_generator(fp32, data, tmp_path / "fp32", progress=False)
    # An fp32 run resumed with bf16 snapshots, at most 3 kept: old files are read beside new.
    first = GenTrainConfig(steps=2, snapshot_every=1, snapshot_dtype="float32", **MICRO)
    train_generator(first, data, tmp_path / "mixed", progress=False)
    mixed = GenTrainConfig(steps=4, snapshot_every=1, max_snapshots=3, **MICRO)
    assert mixed.snapshot_dtype == "bfloat16"
    train_generator(mixed, data, tmp_path / "mixed", progress=False)
    snaps = sorted((tmp_path / "mixed" / "ema_snapshots").iterdir())
    assert [p.name for p in snaps] == [f"ema-0000000{k}.safetensors" for k in (2, 3, 4)]
    dtypes = [load_file(str(p))["ema0.unet.enc.8x8_conv.weight"].dtype for p in snaps]
    assert dtypes == [torch.float32, torch.bfloat16, torch.bfloat16]
    assert snaps[1].stat().st_size < 0.6 * snaps[0].stat().st_size
    for std in (0.05, 0.08):
        want = load_posthoc_generator(tmp_path / "fp32", std=std, step=4)
        got = load_posthoc_generator(tmp_path / "mixed", std=std, step=4)
        for (k, a), b in zip(want.state_dict().items(), got.state_dict().values()):
            assert b.dtype == a.dtype, k
            # the same snapshots, two of them rounded to bf16 (relative 2^-8)
            torch.testing.assert_close(b, a, rtol=2**-7, atol=1e-6, msg=k)
    with pytest.raises(ValueError, match="snapshot_dtype"):
        GenTrainConfig(snapshot_dtype="float16")


def test_absurd_lr_stops_and_keeps_the_last_checkpoint(tmp_path):
    # lr 1e6: loss 0.8 at step 1, then ~1e13 from step 2 on (6e14 in the run)
    cfg = GenTrainConfig(steps=6, lr=1e6, checkpoint_every=1, snapshot_every=1, **MICRO)
    with pytest.raises(TrainingDiverged, match="at step 2: loss .* exceeds") as e:
        train_generator(cfg, _data(), tmp_path, progress=False)
    assert e.value.step == 2 and "the last checkpoint, step 1, is kept" in str(e.value)
    state, _ = load_checkpoint(tmp_path)
    assert state["step"] == 1 < e.value.step
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == ["checkpoint-00000001.safetensors"]
    assert [p.name for p in (tmp_path / "ema_snapshots").iterdir()] == ["ema-00000001.safetensors"]
    assert [h["step"] for h in json.loads((tmp_path / "history.json").read_text())] == [1]
    assert load_generator(tmp_path).img_resolution == 8
    # With the guard off the same run finishes (the old behaviour).
    off = dataclasses.replace(cfg, divergence_factor=0.0)
    train_generator(off, _data(), tmp_path / "off", progress=False)
    assert load_checkpoint(tmp_path / "off")[0]["step"] == 6
    with pytest.raises(ValueError, match="divergence_factor"):
        GenTrainConfig(divergence_factor=-1.0)


def _overfit(tmp_path, steps, preset="tiny", batch_size=16):
    g = torch.Generator().manual_seed(1)
    # 8 smooth 16 px images: random low-resolution patterns upsampled
    low = torch.rand(8, 3, 4, 4, generator=g) * 255
    imgs = torch.nn.functional.interpolate(low, size=16, mode="bilinear").to(torch.uint8)
    data = LabeledImages(imgs, torch.arange(8))
    cfg = GenTrainConfig(
        preset=preset,
        resolution=16,
        batch_size=batch_size,
        steps=steps,
        lr=0.02,
        lr_rampup_steps=10,
        lr_ref_steps=10_000,
        log_every=10,
        xflip=False,
        ema_stds=(0.05,),
        checkpoint_every=10_000,
    )
    net = train_generator(cfg, data, tmp_path, progress=False)
    hist = json.loads((tmp_path / "history.json").read_text())
    return net, data, [h["loss"] for h in hist]


def test_tiny_unet_loss_falls(tmp_path):
    _, _, losses = _overfit(tmp_path, 30, preset="micro", batch_size=8)
    assert losses[-1] < losses[0] - 0.1, losses


@pytest.mark.slow
def test_tiny_unet_overfits_eight_images(tmp_path):
    from auggen.generator.sample import sample

    net, data, losses = _overfit(tmp_path, 600)
    assert losses[-1] < 0.5 * losses[0], losses
    real = prepare_images(data.images, 16)
    x = sample(net, torch.eye(8), range(8), num_steps=16)
    err = (x - real).square().mean((1, 2, 3))
    baseline = (real - real.mean(0)).square().mean((1, 2, 3))  # predicting the data mean
    assert (err < 0.5 * baseline).float().mean() >= 0.75, (err, baseline)


def _ddp_worker(rank, world, port, out_dir):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = GenTrainConfig(steps=3, **MICRO)
        train_generator(cfg, _data(), out_dir / "run", progress=False)
        net = load_checkpoint(out_dir / "run")[1]
        torch.save(dict(net), out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_hold_identical_weights(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the children skip re-importing torch and this module (spawn costs ~10 s each here)
    mp.start_processes(_ddp_worker, args=(2, port, tmp_path), nprocs=2, start_method="fork")
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert set(r0) == set(r1)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # the same global batches in one process give the same network
    train_generator(GenTrainConfig(steps=3, **MICRO), _data(), tmp_path / "single", progress=False)
    single = load_file(str(next((tmp_path / "single").glob("checkpoint-*.safetensors"))))
    for k in single:
        if k.startswith("net."):
            torch.testing.assert_close(single[k], r0[k], atol=1e-4, rtol=1e-4)
