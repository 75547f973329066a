import numpy as np
import pytest
import torch
from torch import nn

from auggen.generator.ema import (
    PowerFunctionEMA,
    exp_to_std,
    posthoc_average,
    posthoc_coefficients,
    profile_inner,
    std_to_exp,
)

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 spells it trapz


def test_std_exp_roundtrip():
    stds = np.array([0.01, 0.05, 0.1, 0.2])
    np.testing.assert_allclose(exp_to_std(std_to_exp(stds)), stds, rtol=1e-9)
    assert std_to_exp(0.05) > std_to_exp(0.1) > 0
    with pytest.raises(ValueError, match="EMA std"):
        std_to_exp(0.5)


def test_profile_inner_matches_numeric_integral():
    tau = np.linspace(0, 3, 300001)[1:]

    def p(t, g):
        return np.where(tau <= t, (g + 1) * tau**g / t ** (g + 1), 0.0)

    for ta, ga, tb, gb in [(1.0, 5.0, 2.0, 10.0), (2.5, 3.0, 1.5, 7.0), (2.0, 6.9, 2.0, 6.9)]:
        num = _trapezoid(p(ta, ga) * p(tb, gb), tau)
        assert abs(profile_inner(ta, ga, tb, gb) - num) < 1e-3 * num


def _track(stds, steps=1000, snap_every=50):
    net = nn.Linear(1, 3, bias=False)
    ema = PowerFunctionEMA(net, stds)
    snaps = []
    for t in range(1, steps + 1):
        with torch.no_grad():
            net.weight.copy_(torch.tensor([[np.sin(t / 60)], [t / 300], [np.cos(t / 25)]]))
        ema.update(net, t_next=t, t_delta=1)
        if t % snap_every == 0:
            for s, e in zip(ema.stds, ema.emas):
                snaps.append((t, s, {k: v.clone() for k, v in e.state_dict().items()}))
    return ema, snaps


def test_first_update_copies_and_posthoc_reconstructs_other_profiles():
    _, snaps = _track((0.05, 0.10))
    target = _track((0.07,))[0].emas[0]
    got = posthoc_average(snaps, 1000, 0.07)["weight"]
    want = target.weight.detach()
    lo = [s[2]["weight"] for s in snaps[-2:]]  # the tracked 0.05 / 0.10 averages at t=1000
    spread = float((lo[0] - lo[1]).abs().max())
    err = float((got - want).abs().max())
    assert err < 0.05 * spread, (err, spread)
    # reconstruct at an earlier time from the snapshots taken up to then
    early = [s for s in snaps if s[0] <= 500]
    ema500 = [s for s in snaps if s[0] == 500 and s[1] == 0.10][0][2]["weight"]
    torch.testing.assert_close(
        posthoc_average(early, 500, 0.10)["weight"], ema500, atol=1e-3, rtol=0
    )


def test_ema_starts_at_net_and_keeps_buffers():
    net = nn.BatchNorm1d(2)
    ema = PowerFunctionEMA(net, (0.05,))
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.running_mean.fill_(1.5)
    ema.update(net, t_next=8, t_delta=8)  # first update: beta = 0
    torch.testing.assert_close(ema.emas[0].weight, net.weight.detach())
    torch.testing.assert_close(ema.emas[0].running_mean, net.running_mean)
    sd = ema.state_dict()
    assert set(sd) >= {"ema0.weight", "ema0.running_mean"}
    ema2 = PowerFunctionEMA(nn.BatchNorm1d(2), (0.05,))
    ema2.load_state_dict(sd)
    torch.testing.assert_close(ema2.emas[0].weight, net.weight.detach())


def test_bf16_snapshots_reconstruct_within_bf16_rounding_of_fp32():
    _, snaps = _track((0.05, 0.10))
    half = [(t, s, {k: v.to(torch.bfloat16) for k, v in sd.items()}) for t, s, sd in snaps]
    scale = max(float(sd["weight"].abs().max()) for _, _, sd in snaps)
    for std in (0.05, 0.07, 0.10, 0.15):
        want = posthoc_average(snaps, 1000, std)["weight"]
        got = posthoc_average(half, 1000, std)["weight"]
        assert got.dtype == torch.float32  # averaged in fp64, returned in fp32
        coef = posthoc_coefficients([s[0] for s in snaps], [s[1] for s in snaps], [1000], [std])
        # Each bf16 weight is off by at most 2^-8 relative (bf16's unit roundoff: 8-bit
        # significand, round to nearest); the combination scales that by the sum of |coef|.
        bound = float(np.abs(coef).sum()) * 2**-8 * scale
        err = float((got - want).abs().max())
        assert 0 < err <= bound, (std, err, bound)


def test_snapshot_casts_averaged_parameters_and_keeps_buffers_exact():
    net = nn.BatchNorm1d(3)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([1 / 3, 2 / 3, 1.0]))
        net.running_mean.copy_(torch.tensor([1 / 3, 0.1, 0.7]))
    ema = PowerFunctionEMA(net, (0.05, 0.10))
    ema.update(net, t_next=1, t_delta=1)
    snap = ema.snapshot("bfloat16")
    assert set(snap) == set(ema.state_dict())
    assert snap["ema1.weight"].dtype == torch.bfloat16
    assert torch.equal(snap["ema1.running_mean"], net.running_mean)
    assert snap["ema0.num_batches_tracked"].dtype == torch.int64
    assert ema.snapshot("float32")["ema0.weight"].dtype == torch.float32
