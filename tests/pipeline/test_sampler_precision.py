"""The pipeline's sampler: bf16 autocast (the CUDA default) against fp32, run here on CPU."""

from dataclasses import replace

import torch

from auggen.generator import build_unet
from auggen.infra import runtime
from auggen.mixing.conditions import one_hot
from auggen.pipeline.presets import PRESETS
from auggen.pipeline.stages.common import sampler


def test_bf16_sampling_matches_fp32_within_tolerance(monkeypatch):
    """Stated tolerance, on uint8 images of a 4-step Heun run: mean |difference| <= 2 levels
    of 255 and at least 90 % of pixels within 4 levels (bf16 keeps 8 bits of mantissa; the
    ODE state itself stays fp32/fp64, only the network runs in bf16)."""
    torch.manual_seed(0)
    net = build_unet("micro", 16, 4).eval()
    with torch.no_grad():
        net.unet.out_gain.fill_(1.0)  # EDM2 starts it at 0: the output would skip the network
    base = replace(PRESETS["micro"], progress=False)
    base = replace(base, sample=replace(base.sample, num_steps=4, batch_size=8))
    rt = runtime.Runtime()  # one process on the CPU
    cond, seeds = one_hot(torch.arange(4).repeat(4), 4), torch.arange(16)
    fp32 = sampler(net, replace(base, sample=replace(base.sample, precision="fp32")), rt)
    bf16 = sampler(net, replace(base, sample=replace(base.sample, precision="bf16")), rt)
    a, b = fp32(cond, seeds).float(), bf16(cond, seeds).float()
    diff = (a - b).abs()
    assert diff.max() > 0  # bf16 really ran
    assert diff.mean() <= 2.0, float(diff.mean())
    assert (diff <= 4).float().mean() >= 0.9
    # "auto" on a CPU without native bf16 is fp32, on one with it bf16: the same images.
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: ())
    assert torch.equal(sampler(net, base, rt)(cond, seeds).float(), a)
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert torch.equal(sampler(net, base, rt)(cond, seeds).float(), b)
