"""Score mixing (ScoreMix): D_mix = sum_m w_m D(x; sigma, c_m) in one batched network call."""

import pytest
import torch

from auggen.generator import build_unet
from auggen.generator.sample import sample
from auggen.generator.score_mix import check_convex, score_mixed


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Bit-for-bit comparisons and a shared 2-core machine: one thread. The batches hold >= 3
    images: oneDNN computes a batch of 1-2 differently in the last bits (the network's own
    batch dependence, not mixing's)."""


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    net = build_unet("tiny", 8, 6).eval()
    with torch.no_grad():  # a non-trivial output (a fresh EDM2 net outputs ~0)
        net.unet.out_gain.fill_(1.0)
        for m in net.modules():
            if hasattr(m, "emb_gain"):
                m.emb_gain.fill_(0.5)
    return net


class CountingNet(torch.nn.Module):
    """Wraps a denoiser and counts its calls and rows."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls, self.rows = net, 0, 0
        self.label_dim, self.img_channels = net.label_dim, net.img_channels
        self.img_resolution = net.img_resolution

    def forward(self, x, sigma, labels=None):
        self.calls += 1
        self.rows += len(x)
        return self.net(x, sigma, labels)


def _pair(i, j):
    return torch.stack([torch.eye(6)[i], torch.eye(6)[j]], 1)  # (M, 2, 6)


def test_lambda_one_is_one_hot_sampling_bit_for_bit(tiny_net):
    seeds = [3, 4, 5]
    ref = sample(tiny_net, torch.eye(6)[[1, 2, 3]], seeds, num_steps=4, clip=False)
    got = sample(
        tiny_net, _pair([1, 2, 3], [4, 0, 5]), seeds, num_steps=4, clip=False,
        weights=torch.tensor([[1.0, 0.0]] * 3),
    )  # fmt: skip
    assert torch.equal(ref, got)
    swapped = sample(
        tiny_net, _pair([4, 0, 5], [1, 2, 3]), seeds, num_steps=4, clip=False,
        weights=torch.tensor([[0.0, 1.0]] * 3),
    )  # fmt: skip
    assert torch.equal(ref, swapped)


def test_a_class_mixed_with_itself_is_its_one_hot_sampling(tiny_net):
    seeds = [7, 8, 9]
    ref = sample(tiny_net, torch.eye(6)[[2, 5, 0]], seeds, num_steps=4, clip=False)
    got = sample(
        tiny_net, _pair([2, 5, 0], [2, 5, 0]), seeds, num_steps=4, clip=False,
        weights=torch.full((3, 2), 0.5),
    )  # fmt: skip
    assert torch.equal(ref, got)


def test_one_network_call_per_evaluation_on_a_k_times_batch(tiny_net):
    net = CountingNet(tiny_net).eval()  # sample() restores the mode it found
    sample(net, _pair([0, 1], [2, 3]), [1, 2], num_steps=3, weights=torch.full((2, 2), 0.5))
    assert net.calls == 2 * 3 - 1 and net.rows == net.calls * 4  # Heun: 2N - 1 evaluations
    net.calls = net.rows = 0
    cond = torch.stack([torch.eye(6)[[0, 1]], torch.eye(6)[[2, 3]], torch.eye(6)[[4, 5]]], 1)
    w = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    sample(net, cond, [1, 2], num_steps=3, weights=w, guidance=1.5)  # CFG: one doubled batch
    assert net.calls == 5 and net.rows == 5 * 2 * 3 * 2


def test_mixed_denoiser_is_the_weighted_sum_and_linear_in_the_weights(tiny_net):
    torch.manual_seed(1)
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor(2.5)
    cond = torch.stack([torch.eye(6)[[0, 1, 2]], torch.eye(6)[[3, 4, 5]]], 1)

    def denoise(x, t, c):
        return tiny_net(x, t, c).to(torch.float64)

    mixed = score_mixed(denoise)
    w1 = torch.tensor([[0.3, 0.7], [1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    w2 = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.0, 1.0]], dtype=torch.float64)
    d0, d1 = denoise(x, t, cond[:, 0]), denoise(x, t, cond[:, 1])  # separate calls
    want = w1[:, 0, None, None, None] * d0 + w1[:, 1, None, None, None] * d1
    torch.testing.assert_close(mixed(x, t, (cond, w1)), want, atol=1e-5, rtol=1e-5)
    a = 0.25  # D_mix(a w1 + (1 - a) w2) = a D_mix(w1) + (1 - a) D_mix(w2)
    lhs = mixed(x, t, (cond, a * w1 + (1 - a) * w2))
    rhs = a * mixed(x, t, (cond, w1)) + (1 - a) * mixed(x, t, (cond, w2))
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=1e-12)


def test_per_image_seeds_independent_of_the_batch(tiny_net):
    cond = _pair([0, 1, 2, 3], [5, 4, 3, 2])
    w = torch.tensor([[0.5, 0.5], [0.3, 0.7], [0.9, 0.1], [0.5, 0.5]])
    full = sample(tiny_net, cond, [1, 2, 3, 4], num_steps=3, weights=w)
    alone = sample(tiny_net, cond[2:3], [3], num_steps=3, weights=w[2:3], batch_size=1)
    torch.testing.assert_close(alone[0], full[2], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([[1.2, -0.2]], "must each be in \\[0, 1\\].*got 1.2"),
        ([[0.6, 0.6]], "must sum to 1.*got a sum of 1.2"),
        ([[float("nan"), 1.0]], "NaN"),
    ],
)
def test_bad_weights_are_refused_naming_them(tiny_net, weights, message):
    with pytest.raises(ValueError, match=message):
        sample(tiny_net, _pair([0], [1]), [0], num_steps=2, weights=torch.tensor(weights))


def test_shapes_are_checked(tiny_net):
    with pytest.raises(ValueError, match="weights must be \\(M, k\\)"):
        sample(tiny_net, _pair([0], [1]), [0], num_steps=2, weights=torch.tensor([[0.2, 0.3, 0.5]]))
    with pytest.raises(ValueError, match="label_dim=6"):
        sample(tiny_net, torch.zeros(1, 2, 5), [0], num_steps=2, weights=torch.tensor([[0.5, 0.5]]))
    assert torch.equal(check_convex([0.25, 0.75]), torch.tensor([0.25, 0.75], dtype=torch.float64))
