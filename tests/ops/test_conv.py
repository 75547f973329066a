"""conv3x3: the CPU backend's Winograd F(4x4, 3x3) path against fp64 F.conv2d, forward and
backward, and the rules for when it applies."""

import pytest
import torch
import torch.nn.functional as F

from auggen import ops
from auggen.ops import conv as conv_mod
from auggen.ops._backend import cpu_ext

pytestmark = pytest.mark.skipif(cpu_ext is None, reason="auggen._C not built")
CL = torch.channels_last


@pytest.fixture(params=["auto", "base"])
def isa(request):
    """Both CPU kernel builds: AVX2+FMA (when the CPU has it) and the x86-64-v2 baseline."""
    cpu_ext.set_isa(request.param)
    yield request.param
    cpu_ext.set_isa("auto")


def _inputs(n, c, h, w, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=CL)
    wt = torch.randn(k, c, 3, 3, generator=g) / (3 * c**0.5)
    return x, wt


def _rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max()).item()


# (N, C, H, W, K): tile edges (H, W not multiples of 4), a channel remainder block (C or K not
# a multiple of 32), one image per block and several blocks per image, 1x1 images.
SHAPES = [
    (2, 32, 8, 8, 32),
    (3, 40, 13, 6, 36),
    (1, 64, 17, 19, 48),
    (2, 33, 1, 1, 32),
    (4, 32, 5, 4, 70),
]


@pytest.mark.parametrize("block", [128, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_fp64_conv(shape, block, isa, monkeypatch):
    monkeypatch.setattr(conv_mod, "BLOCK_TILES", block)  # 3: blocks of one tile row
    monkeypatch.setattr(conv_mod, "MIN_BACKWARD_PIXELS", 0)  # Winograd's own backward
    x, w = _inputs(*shape)
    assert ops.winograd_applies(x, w)
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = ops.conv3x3(x, w)
    assert y.is_contiguous(memory_format=CL) and y.dtype == torch.float32
    gy = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (x, w), gy)
    xd, wd = x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    yd = F.conv2d(xd, wd, padding=1)
    dxd, dwd = torch.autograd.grad(yd, (xd, wd), gy.double())
    # Winograd F(4x4, 3x3) in fp32: a few 1e-6 of the scale (direct conv: ~4e-7)
    assert _rel(y, yd) < 3e-5
    assert _rel(dx, dxd) < 3e-5
    assert _rel(dw, dwd) < 3e-5


def test_small_images_take_onednn_backward_with_the_same_forward(monkeypatch):
    x, w = _inputs(4, 32, 8, 8, 32)
    with torch.no_grad():
        y0 = ops.conv3x3(x, w)
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = ops.conv3x3(x, w)
    assert torch.equal(y.detach(), y0)  # the forward does not depend on grad mode
    dx, dw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    monkeypatch.setattr(conv_mod, "MIN_BACKWARD_PIXELS", 0)
    dx2, dw2 = torch.autograd.grad(ops.conv3x3(x, w), (x, w), torch.ones_like(y))
    assert not torch.equal(dw, dw2)  # two different algorithms ran ...
    torch.testing.assert_close(dx, dx2, rtol=1e-4, atol=1e-4)  # ... for the same gradients
    torch.testing.assert_close(dw, dw2, rtol=1e-4, atol=1e-4)


def test_only_input_or_only_weight_gradient():
    x, w = _inputs(2, 32, 16, 16, 32)
    for need_x in (True, False):
        xx, ww = x.clone().requires_grad_(need_x), w.clone().requires_grad_(not need_x)
        xr, wr = x.double().requires_grad_(need_x), w.double().requires_grad_(not need_x)
        (g,) = torch.autograd.grad(ops.conv3x3(xx, ww).square().sum(), xx if need_x else ww)
        (gr,) = torch.autograd.grad(
            F.conv2d(xr, wr, padding=1).square().sum(), xr if need_x else wr
        )
        assert g.shape == gr.shape and _rel(g, gr) < 3e-5


def test_transforms_are_adjoint():
    """<T v, u> = <v, T* u> for the input and output transforms, on one block of tiles."""
    lib = cpu_ext
    n, c, h, w = 2, 40, 7, 10
    tiles = n * ((h + 3) // 4) * ((w + 3) // 4)
    x = torch.randn(n, h, w, c, dtype=torch.float32)
    dv = torch.randn(36, tiles, c)
    v = torch.empty(36, tiles, c)
    lib.wino_input_fwd(x.data_ptr(), v.data_ptr(), n, h, w, c, 0, tiles)
    dx = torch.zeros_like(x)
    lib.wino_input_bwd(dv.data_ptr(), dx.data_ptr(), n, h, w, c, 0, tiles)
    torch.testing.assert_close((v.double() * dv).sum(), (x.double() * dx).sum(), rtol=1e-5, atol=0)
    m = torch.randn(36, tiles, c)
    y = torch.empty(n, h, w, c)
    lib.wino_output_fwd(m.data_ptr(), y.data_ptr(), n, h, w, c, 0, tiles)
    gy = torch.randn(n, h, w, c)
    dm = torch.empty(36, tiles, c)
    lib.wino_output_bwd(gy.data_ptr(), dm.data_ptr(), n, h, w, c, 0, tiles)
    torch.testing.assert_close((y.double() * gy).sum(), (m.double() * dm).sum(), rtol=1e-5, atol=0)


def test_winograd_weight_is_g_w_gt():
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    g = torch.tensor(conv_mod._G, dtype=torch.float64)
    u = ops.winograd_weight(w)
    assert u.shape == (36, 3, 5)
    for k, c in [(0, 0), (4, 2)]:
        torch.testing.assert_close(u[:, c, k].reshape(6, 6), g @ w[k, c] @ g.T)


def test_when_winograd_applies():
    x, w = _inputs(2, 32, 8, 8, 32)
    assert ops.winograd_applies(x, w)
    assert not ops.winograd_applies(x.contiguous(), w)  # NCHW: oneDNN
    assert not ops.winograd_applies(x, w, backend="reference")
    assert not ops.winograd_applies(x.bfloat16(), w.bfloat16())
    x16, w16 = _inputs(2, 16, 8, 8, 32)
    assert not ops.winograd_applies(x16, w16)  # too few channels to pay off
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not ops.winograd_applies(x, w)
    # whichever path runs, the result is conv2d's
    for xx, ww in [(x.contiguous(), w), (x16, w16)]:
        torch.testing.assert_close(ops.conv3x3(xx, ww), F.conv2d(xx, ww, padding=1))


def test_bad_shapes_name_the_problem():
    x, w = _inputs(2, 32, 8, 8, 32)
    with pytest.raises(ValueError, match=r"\(K, C, 3, 3\) weight"):
        ops.conv3x3(x, torch.randn(32, 32, 1, 1))
    with pytest.raises(ValueError, match=r"does not match weight"):
        ops.conv3x3(x, torch.randn(32, 16, 3, 3))
    with pytest.raises(ValueError, match=r"\(K, C, 3, 3\) weight"):
        ops.winograd_weight(torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"u must be winograd_weight\(w\)"):
        ops.conv3x3(x, w, u=ops.winograd_weight(w).transpose(1, 2)[:, :16])


def test_mpconv_caches_the_transform_and_follows_weight_changes():
    from auggen.generator.layers import MPConv

    torch.manual_seed(0)
    conv = MPConv(32, 32, [3, 3]).eval()
    x = torch.randn(2, 32, 8, 8).contiguous(memory_format=CL)
    with torch.no_grad():
        y1 = conv(x)
        u1 = conv._cache[("winograd", torch.float32, 1.0)]
        assert conv(x).equal(y1)  # served from the cache
        conv.weight.mul_(-1)  # an in-place change (optimizer step, load_state_dict)
        y2 = conv(x)
    torch.testing.assert_close(y2, -y1)
    assert not any(v is u1 for v in conv._cache.values())
    ref = F.conv2d(x.double(), conv.inference_weight(torch.float32).double() * -1, padding=1)
    assert _rel(y1, ref) < 3e-5


def test_mpconv_tensor_gain_change_refreshes_the_transform():
    from auggen.generator.layers import MPConv

    torch.manual_seed(0)
    conv = MPConv(32, 32, [3, 3]).eval()
    gain = torch.tensor(0.5)
    x = torch.randn(2, 32, 8, 8).contiguous(memory_format=CL)
    with torch.no_grad():
        for value in (0.5, 2.0, -1.0):
            gain.fill_(value)  # in place: same tensor, new version
            y = conv(x, gain=gain)
            ref = F.conv2d(
                x.double(), conv.inference_weight(torch.float64, value).double(), padding=1
            )
            assert _rel(y, ref) < 3e-5
    assert sum(k[0] == "winograd" for k in conv._cache if isinstance(k, tuple)) == 1


def test_training_with_winograd_tracks_the_reference_convolution(one_thread):
    """The tiny UNet trained 12 Adam steps with Winograd convolutions (fused backend) and with
    plain conv2d (reference backend), from one seed on one batch stream: the losses agree to
    float32 rounding and the parameters within 1e-4 of their scale."""
    from auggen.generator import build_unet, set_backend, set_memory_format
    from auggen.generator.train import edm2_loss

    def train(backend):
        torch.manual_seed(0)
        net = set_memory_format(build_unet("tiny", 16, 4), "channels_last")
        set_backend(net, backend)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(12):
            y = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1
            sigma = (torch.randn(8, 1, 1, 1, generator=g) * 1.2 - 1.2).exp()
            noise = torch.randn(8, 3, 16, 16, generator=g)
            loss = edm2_loss(net, y, torch.eye(4)[torch.arange(8) % 4], sigma, noise, 0.5).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        return torch.tensor(losses), net

    uses = []
    real = conv_mod._Winograd.apply
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv_mod._Winograd, "apply", lambda *a: uses.append(1) or real(*a))
        fused_losses, fused = train(None)
    assert uses  # the fused run really took the Winograd path
    ref_losses, ref = train("reference")
    torch.testing.assert_close(fused_losses, ref_losses, rtol=1e-5, atol=0)
    for (name, a), b in zip(fused.named_parameters(), ref.parameters()):
        # against the tensor's scale, at least 0.1: the gains start at zero, and Adam moves a
        # near-zero gain by ~lr whatever the size of its gradient
        scale = max(b.abs().max().item(), 0.1)
        assert (a - b).abs().max().item() < 1e-4 * scale, name


def test_inference_mode_forward_leaves_later_training_working():
    """A generator forward under inference_mode (a notebook's sampling, an evaluation callback)
    creates the per-thread Winograd workspace and MPConv's cached weights; later forwards with
    autograd (another net's train step, the same net frozen and differentiated in its input)
    must still run, and conv3x3's gradients still match fp64 conv2d."""
    from auggen.generator import build_unet, set_memory_format
    from auggen.generator.train import edm2_loss

    conv_mod._WORKSPACE.__dict__.clear()  # so the workspace is first made inside inference_mode
    torch.manual_seed(0)
    sampler = set_memory_format(build_unet("tiny", 16, 4), "channels_last").eval()
    other = set_memory_format(build_unet("tiny", 16, 4), "channels_last")
    x, sigma, labels = torch.randn(4, 3, 16, 16), torch.ones(4), torch.eye(4)
    with torch.inference_mode():
        sampler(x, sigma, labels)
    assert conv_mod._WORKSPACE.bufs[0].is_inference() is False

    # Another net's train step.
    loss = edm2_loss(other, x, labels, sigma.view(-1, 1, 1, 1), torch.randn_like(x), 0.5)
    loss.mean().backward()
    assert all(p.grad is not None for p in other.parameters() if p.requires_grad)

    # The same net, frozen, differentiated in its input (cached weights saved for backward).
    sampler.requires_grad_(False)
    xi = x.clone().requires_grad_(True)
    sampler(xi, sigma, labels).square().sum().backward()
    assert xi.grad is not None and xi.grad.isfinite().all()

    # conv3x3's gradients (Winograd's own backward) against fp64 conv2d.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv_mod, "MIN_BACKWARD_PIXELS", 0)
        xw, w = _inputs(2, 32, 8, 8, 32)
        xw.requires_grad_(True)
        w.requires_grad_(True)
        y = ops.conv3x3(xw, w)
        gy = torch.randn_like(y)
        dx, dw = torch.autograd.grad(y, (xw, w), gy)
    xd, wd = xw.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    yd = F.conv2d(xd, wd, padding=1)
    dxd, dwd = torch.autograd.grad(yd, (xd, wd), gy.double())
    assert _rel(y, yd) < 3e-5 and _rel(dx, dxd) < 3e-5 and _rel(dw, dwd) < 3e-5
