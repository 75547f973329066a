import copy

import pytest
import torch

from auggen.generator import PRESETS, build_unet, set_backend, set_memory_format


def _count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "preset,res,labels,over,want",
    [
        ("edm2-img64-s", 64, 1000, {}, 280_209_381),
        ("edm2-img64-m", 64, 1000, {}, 497_803_173),
        ("edm2-img64-s", 112, 10572, {}, 287_560_677),
        (
            "edm2-img64-s",
            32,
            40,
            dict(model_channels=32, num_blocks=1, attn_resolutions=(16, 8)),
            4_160_629,
        ),
    ],
)
def test_parameter_counts_match_edm2(preset, res, labels, over, want):
    with torch.device("meta"):
        net = build_unet(preset, res, labels, **over)
    assert _count(net) == want
    assert _count(net.logvar_linear) == 128


def test_names_follow_edm2():
    with torch.device("meta"):
        net = build_unet("edm2-img64-s", 64, 1000)
    names = [n for n, _ in net.named_parameters()]
    assert names[:4] == [
        "unet.out_gain",
        "unet.emb_noise.weight",
        "unet.emb_label.weight",
        "unet.enc.64x64_conv.weight",
    ]
    assert names[-1] == "logvar_linear.weight"
    for key in ("64x64_block0", "32x32_down", "8x8_block2"):
        assert key in net.unet.enc
    for key in ("8x8_in0", "8x8_in1", "16x16_up", "64x64_block3"):
        assert key in net.unet.dec
    assert net.unet.enc["16x16_block0"].num_heads == 576 // 64
    assert net.unet.enc["32x32_block0"].num_heads == 0
    assert [n for n, _ in net.named_buffers()] == [
        "unet.emb_fourier.freqs",
        "unet.emb_fourier.phases",
        "logvar_fourier.freqs",
        "logvar_fourier.phases",
    ]


def test_attention_resolutions_scale_with_image():
    with torch.device("meta"):
        net = build_unet("edm2-img64-s", 112, 10)
    assert net.unet.enc["28x28_block0"].num_heads > 0
    assert net.unet.enc["14x14_block0"].num_heads > 0
    assert net.unet.enc["56x56_block0"].num_heads == 0
    assert {"tiny", "micro", "edm2-img64-s"} <= set(PRESETS)


def test_bad_arguments():
    with pytest.raises(ValueError, match="preset must be one of"):
        build_unet("huge", 32, 10)
    with pytest.raises(ValueError, match="divisible"):
        build_unet("tiny", 30, 10)
    with pytest.raises(ValueError, match="label_dim"):
        build_unet("tiny", 32, -1)


def test_preconditioning_at_init_and_conditions():
    torch.manual_seed(0)
    net = build_unet("tiny", 16, 5).eval()
    x = torch.randn(3, 3, 16, 16)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    # out_gain starts at 0, so F = 0 and D = c_skip x
    c_skip = 0.25 / (sigma**2 + 0.25)
    torch.testing.assert_close(net(x, sigma), c_skip.reshape(-1, 1, 1, 1) * x)
    with torch.no_grad():
        net.unet.out_gain.fill_(1.0)
        for m in net.modules():
            if hasattr(m, "emb_gain"):
                m.emb_gain.fill_(0.5)
    with torch.no_grad():
        d_none = net(x, sigma)
        d_zero = net(x, sigma, torch.zeros(3, 5))
        d_a = net(x, sigma, torch.eye(5)[:3])
        mix = 0.7 * torch.eye(5)[:3] + 0.4 * torch.eye(5)[1:4]
        d_mix = net(x, sigma, mix)
        d, logvar = net(x, sigma, mix, return_logvar=True)
    torch.testing.assert_close(d_none, d_zero)  # zeros = unconditional
    assert not torch.allclose(d_a, d_zero, atol=1e-4)
    assert not torch.allclose(d_mix, d_a, atol=1e-4)
    torch.testing.assert_close(d, d_mix)
    assert logvar.shape == (3, 1, 1, 1)


def test_reference_backend_matches_default_forward_and_backward():
    torch.manual_seed(0)
    net = build_unet("tiny", 16, 4, model_channels=32).train()
    with torch.no_grad():
        net.unet.out_gain.fill_(1.0)
        for m in net.modules():
            if hasattr(m, "emb_gain"):
                m.emb_gain.fill_(0.3)
    ref = set_backend(copy.deepcopy(net), "reference")
    assert all(getattr(m, "backend", "reference") == "reference" for m in ref.modules())
    x, sigma, c = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 3.0]), torch.eye(4)[:2]
    outs = []
    for m in (net, ref):
        d, lv = m(x, sigma, c, return_logvar=True)
        (d.square().mean() + lv.mean()).backward()
        outs.append((d, {n: p.grad for n, p in m.named_parameters()}))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-4, rtol=1e-4)
    for n, g in outs[0][1].items():
        torch.testing.assert_close(g, outs[1][1][n], atol=1e-4, rtol=1e-3, msg=n)


@pytest.mark.parametrize("backend", [None, "reference"])
def test_memory_formats_agree_forward_and_backward(backend):
    """channels-last activations (the CPU default) give NCHW's outputs and gradients, and the
    output keeps the input's layout."""
    torch.manual_seed(0)
    net = set_backend(build_unet("tiny", 16, 4, model_channels=32).train(), backend)
    with torch.no_grad():
        net.unet.out_gain.fill_(1.0)
    x, sigma, c = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 3.0]), torch.eye(4)[:2]
    got = {}
    for fmt in ("contiguous", "channels_last"):
        m = set_memory_format(copy.deepcopy(net), fmt)
        seen = []

        def hook_fn(mod, inputs, out, seen=seen):
            seen.append(out.is_contiguous(memory_format=torch.channels_last))

        hook = m.unet.enc["16x16_block0"].register_forward_hook(hook_fn)
        d, lv = m(x, sigma, c, return_logvar=True)
        hook.remove()
        (d.square().mean() + lv.mean()).backward()
        assert seen == [fmt == "channels_last"]  # the activations really used the layout
        assert d.is_contiguous()  # the input's layout, not the activations'
        got[fmt] = (d, {n: p.grad for n, p in m.named_parameters()})
    torch.testing.assert_close(got["contiguous"][0], got["channels_last"][0], atol=1e-4, rtol=1e-4)
    for n, g in got["contiguous"][1].items():
        torch.testing.assert_close(g, got["channels_last"][1][n], atol=1e-4, rtol=1e-3, msg=n)


def test_memory_format_policy():
    from auggen.generator.unet import activation_format

    x = torch.zeros(1, 3, 4, 4)
    assert activation_format("auto", x) == torch.channels_last  # CPU
    assert activation_format("contiguous", x) == torch.contiguous_format
    with pytest.raises(ValueError, match="memory_format must be one of"):
        set_memory_format(build_unet("micro", 16, 4), "nhwc")
