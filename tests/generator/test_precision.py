"""The generator's precision policy: ``auto`` follows the hardware (bf16 on CPUs with native
bf16 and on CUDA, fp32 elsewhere), the choice enters the fingerprint only when it is bf16 (so
pinned-fp32 stages keep theirs), config.json says why, and torchrun ranks must agree."""

import json
import socket
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp

from auggen.generator.train import GenTrainConfig, train_generator
from auggen.infra import runtime
from auggen.pipeline.config import PipelineConfig
from auggen.pipeline.stage import Stage, _section, fingerprint, run_stage
from auggen.pipeline.stages import STAGES
from tests.generator.test_train import MICRO, _data, _tensors

NATIVE, NONE = ("avx512_bf16",), ()


def _flags(monkeypatch, flags):
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: flags)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert runtime.cpu_bf16_flags(str(info)) == ("amx_bf16", "avx512_bf16")
    older = tmp_path / "cpuinfo-avx512"  # (read once per path)
    older.write_text("processor : 0\nflags : fpu avx2 avx512f\n")
    assert runtime.cpu_bf16_flags(str(older)) == ()
    assert runtime.cpu_bf16_flags(str(tmp_path / "missing")) == ()


def test_auto_follows_the_cpu_and_explicit_settings_win(monkeypatch):
    _flags(monkeypatch, NATIVE)
    assert runtime.precision_choice("auto", "cpu") == (
        True,
        "bf16 (auto: this CPU computes bf16 natively: avx512_bf16)",
    )
    assert runtime.precision_choice("fp32", "cpu") == (False, "fp32 (set explicitly)")
    _flags(monkeypatch, NONE)
    bf16, why = runtime.precision_choice("auto", "cpu")
    assert not bf16 and "no native bf16" in why
    assert runtime.precision_choice("bf16", "cpu")[0]
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.precision_choice("fp16", "cpu")


def _pinned(cfg):
    return replace(
        cfg,
        gen=replace(cfg.gen, precision="fp32"),
        sample=replace(cfg.sample, precision="fp32"),
    )


@pytest.mark.parametrize("stage", ["train_gen", "repro", "grid", "generate"])
def test_fingerprint_holds_the_precision_used(stage, monkeypatch):
    st, tokens = STAGES[stage], {"data": "t0", "train_gen": "t1", "train_fr": "t2", "grid": "t3"}
    auto, pinned = PipelineConfig(), _pinned(PipelineConfig())
    key = "gen" if stage == "train_gen" else "sample"
    prints = {}
    for flags in (NATIVE, NONE):
        _flags(monkeypatch, flags)
        # pinned fp32: exactly the section as configured (the effect study's fingerprints)
        assert "precision_used" not in _section(pinned, key)
        prints[flags] = (fingerprint(st, auto, tokens), fingerprint(st, pinned, tokens))
    assert prints[NATIVE][1] == prints[NONE][1]  # fp32 pinned: independent of the CPU
    assert prints[NATIVE][0] != prints[NONE][0]  # auto: bf16 here, fp32 there
    _flags(monkeypatch, NATIVE)
    assert _section(auto, key)["precision_used"] == "bf16"


def test_config_json_says_which_precision_and_why(tmp_path, monkeypatch):
    _flags(monkeypatch, NATIVE)
    st = Stage("toy_gen", lambda cfg, in_dirs, out, rt: None, (), ("gen", "sample"))
    cfg = replace(PipelineConfig(), sample=replace(PipelineConfig().sample, precision="fp32"))
    run_stage(st, cfg, {}, tmp_path / "toy", "fp", {})
    rec = json.loads((tmp_path / "toy" / "config.json").read_text())
    assert rec["precision"] == {
        "gen": "bf16 (auto: this CPU computes bf16 natively: avx512_bf16)",
        "sample": "fp32 (set explicitly)",
    }
    assert rec["config"]["gen"]["precision_used"] == "bf16"
    assert "precision_used" not in rec["config"]["sample"]


def test_bf16_training_tracks_fp32_and_records_the_precision(tmp_path, monkeypatch):
    """8 steps of the micro UNet in bf16 (auto on a native-bf16 CPU) and fp32 from one seed:
    per-step losses within 2 % of each other (tolerance stated in docs/cpu_speed.md), fp32
    master weights, and the checkpoint says which precision ran."""
    _flags(monkeypatch, NATIVE)
    cfg = GenTrainConfig(**dict(MICRO, steps=8, precision="auto"))
    train_generator(cfg, _data(), tmp_path / "bf16", progress=False)
    train_generator(replace(cfg, precision="fp32"), _data(), tmp_path / "fp32", progress=False)
    (s16, t16), (s32, _) = _tensors(tmp_path / "bf16"), _tensors(tmp_path / "fp32")
    assert s16["precision"]["used"] == "bf16" and s32["precision"]["used"] == "fp32"
    assert all(v.dtype == torch.float32 for k, v in t16.items() if k.startswith("net."))
    l16 = torch.tensor([h["loss"] for h in s16["history"]])
    l32 = torch.tensor([h["loss"] for h in s32["history"]])
    assert not torch.equal(l16, l32)  # bf16 really ran
    torch.testing.assert_close(l16, l32, rtol=0.02, atol=0)


def _agree_worker(rank, world, port, out_dir):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for case, flags in (("same", (NATIVE, NATIVE)), ("differ", (NATIVE, NONE))):
            runtime.cpu_bf16_flags = lambda flags=flags: flags[rank]  # a fork: only this rank
            try:
                results[case] = runtime.agreed_precision("auto", "cpu", "train_gen")[0]
            except RuntimeError as e:
                results[case] = str(e)
        (out_dir / f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_torchrun_ranks_agree_or_stop(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_agree_worker, args=(2, port, tmp_path), nprocs=2, start_method="fork")
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["same"] is True
        assert "different precisions" in got["differ"] and "rank 1: fp32" in got["differ"]


def _loss_and_grads(dtype, backend, bf16, seen=None):
    from auggen.generator import build_unet, set_backend, set_memory_format
    from auggen.generator.layers import Block
    from auggen.generator.train import edm2_loss

    torch.manual_seed(0)
    net = set_memory_format(build_unet("tiny", 16, 4), "channels_last")
    with torch.no_grad():  # non-zero gains, so every layer shapes the output and gradients
        for name, p in net.named_parameters():
            if "gain" in name:
                p.fill_(1.0 if name == "unet.out_gain" else 0.5)
    net = set_backend(net, backend).to(dtype)
    for m in net.modules() if seen is not None else ():
        if isinstance(m, Block):  # which dtype the activations between blocks have
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(4, 3, 16, 16, generator=g) * 2 - 1).to(dtype)
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0], dtype=dtype).view(-1, 1, 1, 1)
    noise = torch.randn(4, 3, 16, 16, generator=g).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = edm2_loss(net, y, torch.eye(4).to(dtype), sigma, noise, 0.5)
    assert loss.dtype == dtype  # the loss stays in the master precision
    loss.mean().backward()
    grads = {n: p.grad.double() for n, p in net.named_parameters() if p.grad is not None}
    return loss.detach().double(), grads


def test_bf16_unet_with_fused_ops_tracks_fp64_forward_and_backward(one_thread):
    """The tiny UNet under bf16 autocast on the fused CPU ops (they read and write bf16 and
    accumulate in fp32) against the plain-PyTorch reference in fp64: per-element losses within
    1 % (norm-wise), all gradients together within 1 %, each weight's within 10 % (not the
    scalar gains': one sum of many bf16 products that cancel). fp32 on this path: 1e-5."""
    from auggen.ops._backend import resolve

    seen = []
    loss64, grads64 = _loss_and_grads(torch.float64, "reference", False)
    loss16, grads16 = _loss_and_grads(torch.float32, None, True, seen)
    # the blocks' activations were bf16, and the fused CPU kernels take bf16
    assert seen and set(seen) == {torch.bfloat16}
    assert resolve(None, torch.zeros(2, 2, dtype=torch.bfloat16)) == "cpu"

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    def flat(g):
        return torch.cat([g[k].flatten() for k in sorted(grads64)])

    assert rel(loss16, loss64) < 1e-2
    assert rel(flat(grads16), flat(grads64)) < 1e-2
    worst = max((rel(grads16[k], grads64[k]), k) for k in grads64 if grads64[k].ndim > 1)
    assert worst[0] < 0.1, worst
    loss32, grads32 = _loss_and_grads(torch.float32, None, False)
    assert rel(loss32, loss64) < 1e-5 and rel(flat(grads32), flat(grads64)) < 1e-5
