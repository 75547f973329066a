"""torch.library integration (opcheck, torch.compile), dispatch rules and argument errors."""

import pytest
import torch

from auggen import ops
from auggen.ops import _backend


def _x(*shape, grad=True):
    g = torch.Generator().manual_seed(0)
    return torch.randn(*shape, generator=g).requires_grad_(grad)


def _opcheck_cases():
    x, y, c = _x(2, 5, 3, 4), _x(2, 5, 3, 4), _x(2, 5)
    g = torch.randn(2, 5, 3, 4)
    a = torch.ops.auggen
    return {
        "pixel_norm": (a.pixel_norm.default, (x, 1, 1e-4, "cpu")),
        "pixel_norm_silu": (a.pixel_norm_silu.default, (x, 2, 1e-4, "cpu")),
        "pixel_norm_backward": (a.pixel_norm_backward.default, (g, g, x.detach(), 1, 1e-4, "cpu")),
        "mp_silu": (a.mp_silu.default, (x, "cpu")),
        "mp_silu_backward": (a.mp_silu_backward.default, (g, x.detach(), "cpu")),
        "mp_sum": (a.mp_sum.default, (x, y, 0.3, "cpu")),
        "mp_sum_backward": (a.mp_sum_backward.default, (g, 0.3, "cpu")),
        "mp_sum_clamp": (a.mp_sum_clamp.default, (x, y, 0.3, 1.0, "cpu")),
        "mp_sum_clamp_backward": (
            a.mp_sum_clamp_backward.default,
            (g, x.detach(), y.detach(), 0.3, 1.0, "cpu"),
        ),
        "modulated_mp_silu": (a.modulated_mp_silu.default, (x, c, "cpu")),
        "modulated_mp_silu_backward": (
            a.modulated_mp_silu_backward.default,
            (g, x.detach(), c.detach(), "cpu"),
        ),
    }


@pytest.mark.parametrize("name", list(_opcheck_cases()))
def test_opcheck(name):
    op, args = _opcheck_cases()[name]
    torch.library.opcheck(op, args)


def test_opcheck_channels_last():
    x = _x(2, 5, 3, 4, grad=False).contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.auggen.pixel_norm_silu.default, (x, 1, 1e-4, "cpu"))


def _block(x, c, skip):
    """An EDM2-style block tail built only from the fused ops (no inductor codegen needed)."""
    n, a = ops.pixel_norm_silu(x, backend="cpu")
    y = ops.mp_sum(ops.modulated_mp_silu(a, c, backend="cpu"), skip, 0.5, backend="cpu")
    return ops.mp_sum_clamp(n, ops.mp_silu(y, backend="cpu"), 0.3, 2.0, backend="cpu")


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    x, c, skip = _x(2, 8, 4, 4), _x(2, 8), _x(2, 8, 4, 4)
    eager = _block(x, c, skip)
    compiled = torch.compile(_block, fullgraph=True)(x, c, skip)
    torch.testing.assert_close(compiled, eager)
    ge = torch.autograd.grad(eager.square().sum(), [x, c, skip])
    gc = torch.autograd.grad(compiled.square().sum(), [x, c, skip])
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_backends_listing_and_auto_choice():
    found = ops.backends()
    assert found[0] == "reference" and set(found) <= set(ops.BACKENDS)
    x = torch.randn(3, 4)
    expect = "cpu" if "cpu" in found else "reference"
    assert _backend.resolve(None, x) == expect
    assert _backend.resolve("cpu", x.double()) == "reference"  # fp64 runs the reference code


def test_gpu_order_from_environment(monkeypatch):
    monkeypatch.setenv("AUGGEN_GPU_ORDER", "triton, cuda")
    assert _backend._gpu_order() == ("triton", "cuda")
    monkeypatch.delenv("AUGGEN_GPU_ORDER")
    assert _backend._gpu_order() == ("cuda", "triton")
    monkeypatch.setenv("AUGGEN_GPU_ORDER", "cuda,tpu")
    with pytest.raises(ValueError, match="AUGGEN_GPU_ORDER must list"):
        _backend._gpu_order()


def test_unavailable_or_unknown_backend_raises():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="backend"):
        ops.pixel_norm(x, backend="fortran")
    missing = [b for b in ops.BACKENDS if b not in ops.backends()]
    for b in missing:
        with pytest.raises(RuntimeError, match=f"backend '{b}' is not available"):
            ops.mp_silu(x, backend=b)


def test_bad_arguments_name_the_argument():
    x = torch.randn(2, 3, 4)
    with pytest.raises(TypeError, match="x must be a floating"):
        ops.pixel_norm_silu(torch.ones(2, 3, dtype=torch.int64), backend="cpu")
    with pytest.raises(ValueError, match="dim=3"):
        ops.pixel_norm(x, dim=3, backend="cpu")
    with pytest.raises(ValueError, match="t must be in"):
        ops.mp_sum_clamp(x, x, t=-0.1, backend="cpu")
    with pytest.raises(ValueError, match="same shape"):
        ops.mp_sum(x, x[:1], backend="cpu")
    with pytest.raises(TypeError, match="same dtype"):
        ops.mp_sum(x, x.half(), backend="cpu")
    with pytest.raises(ValueError, match="clip must be > 0"):
        ops.mp_sum_clamp(x, x, clip=0.0, backend="cpu")
    with pytest.raises(ValueError, match="c must have shape"):
        ops.modulated_mp_silu(x, torch.randn(3, 2), backend="cpu")


def test_fp64_falls_back_to_reference():
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(
        ops.pixel_norm(x, backend="cpu"), ops.pixel_norm(x, backend="reference")
    )


@pytest.mark.skipif(_backend.cuda_ext is None, reason="auggen._C_cuda not built")
def test_cuda_launch_error_becomes_runtime_error():
    """Without a usable driver the launchers return a cudaError code; it must not crash."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: launches succeed")
    err = _backend.cuda_ext.mp_silu_fwd(0, 0, 0, 16, 0)
    assert err != 0
    with pytest.raises(RuntimeError, match="CUDA kernel failed"):
        _backend.check_cuda(err)


@pytest.mark.skipif("triton" not in ops.backends(), reason="triton unavailable")
@pytest.mark.triton_cpu
def test_opcheck_triton_backend():
    x, c = _x(2, 5, 3, 4), _x(2, 5)
    torch.library.opcheck(torch.ops.auggen.pixel_norm_silu.default, (x, 1, 1e-4, "triton"))
    torch.library.opcheck(torch.ops.auggen.modulated_mp_silu.default, (x, c, "triton"))
