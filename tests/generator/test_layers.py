import math

import pytest
import torch

from auggen.generator.layers import Block, MPConv, MPFourier, mp_cat, resample
from auggen.ops import mp_attention


def _rms(x):
    return float(x.detach().pow(2).mean().sqrt())


@pytest.mark.parametrize("kernel", [[], [1, 1], [3, 3]])
def test_mpconv_preserves_magnitude(kernel):
    torch.manual_seed(0)
    conv = MPConv(64, 48, kernel)
    x = torch.randn(64, 64) if not kernel else torch.randn(16, 64, 12, 12)
    y = conv(x)
    assert abs(_rms(y) - 1) < 0.1
    assert abs(_rms(conv(x, gain=0.5)) - 0.5) < 0.05


def test_mpconv_forced_weight_norm_only_in_training():
    torch.manual_seed(0)
    conv = MPConv(8, 4, [3, 3])
    conv.weight.data.mul_(5)
    conv.eval()
    conv(torch.randn(2, 8, 5, 5))
    assert conv.weight.flatten(1).pow(2).mean(1).sqrt().min() > 2  # untouched in eval
    conv.train()
    conv(torch.randn(2, 8, 5, 5))
    rms = conv.weight.flatten(1).pow(2).mean(1).sqrt()
    torch.testing.assert_close(rms, torch.ones(4), atol=1e-3, rtol=0)


def test_mpconv_matches_formula_and_cache_invalidates():
    torch.manual_seed(0)
    conv = MPConv(6, 5, [3, 3]).eval()
    x = torch.randn(2, 6, 7, 7)

    def brute():
        w = conv.weight.double()
        w = w / (1e-4 + w.flatten(1).norm(dim=1) / math.sqrt(54)).reshape(-1, 1, 1, 1)
        w = w / math.sqrt(54)
        return torch.nn.functional.conv2d(x.double(), w, padding=1).float()

    with torch.no_grad():
        torch.testing.assert_close(conv(x), brute(), atol=1e-5, rtol=1e-5)
        assert conv._cache is not None
        conv.weight.mul_(-1)  # in-place change bumps the version: cache must not be reused
        torch.testing.assert_close(conv(x), brute(), atol=1e-5, rtol=1e-5)
    conv.train()
    assert conv._cache is None


def test_mpfourier_and_mp_cat_magnitude():
    torch.manual_seed(0)
    f = MPFourier(256)
    y = f(torch.randn(512))
    assert abs(_rms(y) - 1) < 0.05
    assert [n for n, _ in f.named_buffers()] == ["freqs", "phases"]
    a, b = torch.randn(8, 24, 4, 4), torch.randn(8, 40, 4, 4)
    for t in (0.5, 0.3):
        c = mp_cat(a, b, t=t)
        assert c.shape == (8, 64, 4, 4)
        assert abs(_rms(c) - 1) < 0.05
        na, nb = 24, 40
        s = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
        torch.testing.assert_close(c[:, :na], a * s * (1 - t) / math.sqrt(na))


def test_resample():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(resample(x, "down"), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    up = resample(x, "up")
    assert up.shape == (1, 1, 8, 8) and up[0, 0, 1, 1] == x[0, 0, 0, 0]
    y = torch.randn(2, 3, 5, 6)
    want = y.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(resample(y, "up"), want)  # exact copies
    cl = resample(y.contiguous(memory_format=torch.channels_last), "up")
    assert torch.equal(cl, want) and cl.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="resample mode"):
        resample(x, "sideways")


def test_mp_attention_matches_bruteforce():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 16) for _ in range(3))

    def nrm(t):
        return t / (1e-4 + t.norm(dim=-1, keepdim=True) / 4)

    w = torch.einsum("nhqc,nhkc->nhqk", nrm(q), nrm(k) / 4).softmax(-1)
    ref = torch.einsum("nhqk,nhkc->nhqc", w, nrm(v))
    torch.testing.assert_close(mp_attention(q, k, v), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "flavor,cin,cout,mode,attn",
    [("enc", 32, 64, "keep", True), ("enc", 64, 64, "down", False), ("dec", 96, 64, "up", True)],
)
def test_block_preserves_magnitude(flavor, cin, cout, mode, attn):
    torch.manual_seed(0)
    blk = Block(cin, cout, 32, flavor=flavor, resample_mode=mode, attention=attn).eval()
    x = torch.randn(8, cin, 8, 8)
    y = blk(x, torch.randn(8, 32))
    assert abs(_rms(y) - 1) < 0.25
    assert y.shape[1] == cout
    names = [n for n, _ in blk.named_parameters()]
    order = ["emb_gain", "conv_res0", "emb_linear", "conv_res1", "conv_skip", "attn_qkv"]
    want = [n for n in order if n in {m.split(".")[0] for m in names}]
    assert [n.split(".")[0] for n in names][: len(want)] == want


def test_block_attention_layout_matches_edm2():
    """Brute force of EDM2's attention: qkv reshaped (N, heads, ch, 3, HW), q/k/v innermost."""
    torch.manual_seed(0)
    blk = Block(128, 128, 16, attention=True, channels_per_head=64).eval()
    with torch.no_grad():
        blk.emb_gain.fill_(0.3)
    x, emb = torch.randn(2, 128, 4, 4), torch.randn(2, 16)

    def nrm(t, dim):
        return t / (1e-4 + t.norm(dim=dim, keepdim=True) / math.sqrt(t.shape[dim]))

    def silu(t):
        return torch.nn.functional.silu(t) / 0.596

    def mpsum(a, b, t):
        return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)

    with torch.no_grad():
        h = nrm(x, 1)
        y = blk.conv_res0(silu(h))
        c = blk.emb_linear(emb, gain=blk.emb_gain) + 1
        y = blk.conv_res1(silu(y * c[:, :, None, None]))
        h = mpsum(h, y, 0.3)
        qkv = blk.attn_qkv(h).reshape(2, 2, 64, 3, 16)
        q, k, v = nrm(qkv, 2).unbind(3)
        w = torch.einsum("nhcq,nhck->nhqk", q, k / 8).softmax(3)
        a = blk.attn_proj(torch.einsum("nhqk,nhck->nhcq", w, v).reshape(2, 128, 4, 4))
        ref = mpsum(h, a, 0.3).clip(-256, 256)
        torch.testing.assert_close(blk(x, emb), ref, atol=2e-5, rtol=2e-5)
    assert Block(48, 48, 16, attention=True).num_heads == 0  # < 64 channels: silently off
    assert Block(96, 96, 16, attention=True).num_heads == 1
