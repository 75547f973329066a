import math

import pytest
import torch
from torch import nn

from auggen.generator import build_unet
from auggen.generator.sample import sample, sample_euler, sigma_steps, to_uint8


class GaussianMixtureDenoiser(nn.Module):
    """Ideal denoiser E[x | x + σn] for x ~ Σ_k π_k N(μ_k, s_k² I); a condition vector picks
    the component (one-hot), zeros mean the whole mixture."""

    def __init__(self, means, stds, weights, res=2):
        super().__init__()
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, 1, res, res)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.img_channels, self.img_resolution, self.label_dim = 1, res, len(weights)
        self.calls = 0

    def forward(self, x, sigma, labels=None):
        self.calls += 1
        x = x.double()
        s2 = float(sigma) ** 2
        var = self.stds**2 + s2  # (K,)
        d = x.shape[1] * x.shape[2] * x.shape[3]
        diff = x[:, None] - self.means[None]  # (N, K, 1, R, R)
        logp = -0.5 * diff.flatten(2).square().sum(-1) / var - 0.5 * d * var.log()
        logp = logp + self.weights.log()
        if labels is not None and labels.abs().sum() > 0:
            logp = torch.where(labels.double() > 0, logp, torch.full_like(logp, -math.inf))
        r = logp.softmax(1)[:, :, None, None, None]
        shrink = (self.stds**2 / var)[None, :, None, None, None]
        return (r * (self.means[None] + shrink * diff)).sum(1).float()


def _mixture():
    means = torch.tensor([[-0.5, 0.2, 0.4, -0.1], [0.5, -0.3, 0.0, 0.3]]).reshape(2, 1, 2, 2)
    return GaussianMixtureDenoiser(means, [0.1, 0.2], [0.3, 0.7])


def test_sigma_steps_formula():
    t = sigma_steps(5, 0.002, 80, 7)
    assert len(t) == 6 and t[-1] == 0
    torch.testing.assert_close(t[0], torch.tensor(80.0, dtype=torch.float64))
    torch.testing.assert_close(t[4], torch.tensor(0.002, dtype=torch.float64))
    i = 2
    want = (80 ** (1 / 7) + i / 4 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert abs(float(t[i]) - want) < 1e-9
    assert (t[:-1].diff() < 0).all()
    with pytest.raises(ValueError, match="num_steps"):
        sigma_steps(0)


def test_heun_reproduces_mixture_moments():
    net = _mixture()
    m = 4000
    x = sample(net, torch.zeros(m, 2), range(m), num_steps=24, clip=False).double()
    x = x.reshape(m, -1)
    # assign each sample to the nearest mean
    dist = torch.cdist(x, net.means.reshape(2, -1))
    k = dist.argmin(1)
    assert abs(float((k == 1).double().mean()) - 0.7) < 0.03
    for j in range(2):
        xs = x[k == j]
        torch.testing.assert_close(xs.mean(0), net.means[j].reshape(-1), atol=0.02, rtol=0)
        assert abs(float(xs.std(0).mean()) - float(net.stds[j])) < 0.02
    # conditional sampling picks one component
    xc = sample(net, torch.eye(2)[[0] * 500], range(500), num_steps=24, clip=False).double()
    torch.testing.assert_close(xc.mean(0).reshape(-1), net.means[0].reshape(-1), atol=0.02, rtol=0)
    assert abs(float(xc.reshape(500, -1).std(0).mean()) - 0.1) < 0.01


def test_heun_beats_euler_at_equal_evaluations():
    # one Gaussian: the probability-flow ODE has the closed form x0 = μ + s/sqrt(s²+T²)(x_T - μ)
    net = GaussianMixtureDenoiser(torch.full((1, 1, 2, 2), 0.3), [0.2], [1.0])
    seeds = list(range(16))
    cond = torch.ones(16, 1)
    t_max = 80.0
    noise = torch.stack(
        [torch.randn(1, 2, 2, generator=torch.Generator().manual_seed(s)) for s in seeds]
    ).double()
    exact = 0.3 + 0.2 / math.sqrt(0.04 + t_max**2) * (noise * t_max - 0.3)
    errs = {}
    for n in (32, 64):
        net.calls = 0
        heun = sample(net, cond, seeds, num_steps=n, clip=False)
        assert net.calls == 2 * n - 1  # last step is Euler
        net.calls = 0
        euler = sample_euler(net, cond, seeds, num_steps=2 * n - 1, clip=False)
        assert net.calls == 2 * n - 1
        errs[n] = (
            float((heun.double() - exact).abs().max()),
            float((euler.double() - exact).abs().max()),
        )
    assert errs[32][0] < 0.5 * errs[32][1], errs
    assert errs[64][0] < 0.25 * errs[64][1], errs
    assert errs[32][0] / errs[64][0] > 3.0, errs  # second order: error / 4 per halving
    assert errs[32][1] / errs[64][1] < 2.5, errs  # first order: error / 2


def test_guidance():
    net = _mixture()
    c = torch.eye(2)[[0, 1, 1]]
    base = sample(net, c, [1, 2, 3], num_steps=6)
    # autoguidance with gnet == net: D_ref = D, so any weight gives the plain result
    torch.testing.assert_close(sample(net, c, [1, 2, 3], num_steps=6, guidance=2.0, gnet=net), base)
    # CFG: the unconditional reference pulls the result away from it
    cfg = sample(net, c, [1, 2, 3], num_steps=6, guidance=1.5)
    assert not torch.allclose(cfg, base)


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    net = build_unet("tiny", 8, 6).eval()
    with torch.no_grad():
        net.unet.out_gain.fill_(1.0)
        for m in net.modules():
            if hasattr(m, "emb_gain"):
                m.emb_gain.fill_(0.5)
    return net


def test_per_image_seeds_independent_of_batch(tiny_net):
    cond = torch.rand(5, 6, generator=torch.Generator().manual_seed(0))
    seeds = [11, 12, 13, 14, 15]
    full = sample(tiny_net, cond, seeds, num_steps=3)
    chunked = sample(tiny_net, cond, seeds, num_steps=3, batch_size=2)
    torch.testing.assert_close(full, chunked, atol=2e-4, rtol=1e-4)
    alone = sample(tiny_net, cond[3:4], seeds[3:4], num_steps=3)
    torch.testing.assert_close(alone[0], full[3], atol=2e-4, rtol=1e-4)
    other = sample(tiny_net, torch.cat([cond[3:4], torch.rand(2, 6)]), [14, 99, 98], num_steps=3)
    torch.testing.assert_close(other[0], full[3], atol=2e-4, rtol=1e-4)
    assert full.min() >= -1 and full.max() <= 1 and full.shape == (5, 3, 8, 8)


def test_bad_inputs(tiny_net):
    with pytest.raises(ValueError, match="label_dim=6"):
        sample(tiny_net, torch.rand(2, 5), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        sample(tiny_net, torch.tensor([[float("nan")] * 6]), [0])
    with pytest.raises(ValueError, match="same count"):
        sample(tiny_net, torch.rand(3, 6), [0, 1])
    with pytest.raises(ValueError, match="solver"):
        sample(tiny_net, torch.rand(1, 6), [0], solver="rk4")
    with pytest.raises(ValueError, match="batch_size"):
        sample(tiny_net, torch.rand(1, 6), [0], batch_size=0)


def test_to_uint8():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 255]


def test_train_mode_net_is_sampled_in_eval_and_restored(tiny_net):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    want = sample(tiny_net, torch.eye(6)[:2], [3, 4], num_steps=2)
    tiny_net.train()
    try:
        got = sample(tiny_net, torch.eye(6)[:2], [3, 4], num_steps=2)
        assert tiny_net.training
    finally:
        tiny_net.eval()
    torch.testing.assert_close(got, want)
    for k, v in tiny_net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bf16_autocast_and_channels_last_close_to_fp32(tiny_net):
    c = torch.eye(6)[:3]
    ref = sample(tiny_net, c, [5, 6, 7], num_steps=3)
    cl = sample(tiny_net, c, [5, 6, 7], num_steps=3, channels_last=True)
    torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-4)
    bf = sample(tiny_net, c, [5, 6, 7], num_steps=3, autocast=True)
    assert float((bf - ref).abs().mean()) < 0.05
