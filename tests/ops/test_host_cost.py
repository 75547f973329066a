"""Host-side costs of inference: weights cached per dtype, ops called without the dispatcher
when no autograd is needed, and the results unchanged bit for bit."""

import math

import torch

from auggen import ops
from auggen.generator.layers import MPConv, inference_weights
from auggen.ops._backend import dispatch
from auggen.ops.pixel_norm import pixel_norm_op


def test_inference_weight_cached_per_dtype_and_gain_equals_training_formula():
    torch.manual_seed(0)
    conv = MPConv(6, 5, [3, 3]).eval()
    x = torch.randn(2, 6, 7, 7)
    gain = torch.nn.Parameter(torch.tensor(0.7))
    with torch.no_grad():
        w32 = conv.inference_weight(torch.float32, gain)
        assert conv.inference_weight(torch.float32, gain) is w32  # cached
        w16 = conv.inference_weight(torch.bfloat16)
        assert w16.dtype == torch.bfloat16 and conv.inference_weight(torch.bfloat16) is w16
        got = conv(x, gain=gain)
        gain.mul_(2)  # a changed tensor gain is a new cache slot, the old one dropped
        assert not torch.equal(conv(x, gain=gain), got)
        gain.div_(2)
    want = conv(x, gain=gain)  # grad enabled, weight requires grad: the training formula
    assert torch.equal(got, want)
    wn = conv.weight.double() / (
        1e-4 + conv.weight.double().flatten(1).norm(dim=1) / math.sqrt(54)
    ).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(w32.double(), wn * 0.7 / math.sqrt(54), atol=1e-6, rtol=1e-5)


def test_inference_weights_bakes_and_restores():
    net = torch.nn.Sequential(MPConv(4, 4, [1, 1]), MPConv(4, 4, []))
    net.eval()
    with inference_weights(net, torch.bfloat16):
        assert all(m._baked is not None and m._baked.dtype == torch.bfloat16 for m in net)
    assert all(m._baked is None for m in net)


def test_dispatch_skips_the_dispatcher_outside_torch_compile():
    x = torch.randn(2, 3, 4, 4)
    impl = pixel_norm_op._init_fn
    with torch.no_grad():
        assert dispatch(pixel_norm_op, x) is impl
    assert dispatch(pixel_norm_op, x) is impl  # no input needs a gradient
    eager = dispatch(pixel_norm_op, x.requires_grad_())
    assert eager not in (impl, pixel_norm_op)  # an autograd.Function's apply
    y = ops.pixel_norm(x, backend="cpu")
    assert y.grad_fn is not None and "eager" in type(y.grad_fn).__name__
    with torch.no_grad():
        torch.testing.assert_close(ops.pixel_norm(x, backend="cpu"), y.detach(), rtol=0, atol=0)
