"""Every compiled backend against the fp64 plain-PyTorch reference, forward and backward."""

import pytest
import torch

from auggen import ops
from auggen.ops._backend import cpu_ext
from tests.ops._cases import OPS, compare, make_inputs

CPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ODD_SHAPES = [(3, 13, 7, 5), (2, 1, 4, 3), (0, 8, 4, 4), (1, 300, 1, 2)]
LAYOUTS = ["contiguous", "channels_last", "strided", "transposed", "offset"]


@pytest.fixture(params=["auto", "base"])
def isa(request):
    """Both CPU kernel builds: AVX2+F16C (when the CPU has it) and the x86-64-v2 baseline."""
    cpu_ext.set_isa(request.param)
    yield request.param
    cpu_ext.set_isa("auto")


needs_triton = pytest.mark.skipif("triton" not in ops.backends(), reason="triton unavailable")


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_cpu_matches_reference(op, shape, dtype):
    compare(op, "cpu", shape, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", list(OPS))
def test_cpu_layouts(op, layout):
    outs = compare(op, "cpu", (2, 6, 5, 3), torch.float32, layout=layout)
    if layout == "channels_last":  # the output keeps the input's memory format
        assert outs[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("op", ["pixel_norm", "pixel_norm_silu"])
def test_cpu_all_zero_vector(op, dtype):
    compare(op, "cpu", (2, 5, 3, 3), dtype, zero_vector=True)


@pytest.mark.parametrize("dim", [0, 2, -1])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cpu_pixel_norm_any_dim(dim, layout):
    x = make_inputs("pixel_norm", (3, 4, 5, 6))[0]
    xf = x.float().contiguous(
        memory_format=getattr(torch, layout.replace("contiguous", "contiguous_format"))
    )
    for fn in (ops.pixel_norm, lambda t, **kw: ops.pixel_norm_silu(t, **kw)[1]):
        xr = xf.double().requires_grad_()
        xc = xf.clone().requires_grad_()
        out, ref = fn(xc, dim=dim, backend="cpu"), fn(xr, dim=dim, backend="reference")
        torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)
        (gc,) = torch.autograd.grad(out.square().sum(), xc)
        (gr,) = torch.autograd.grad(ref.square().sum(), xr)
        torch.testing.assert_close(gc.double(), gr, atol=1e-4, rtol=1e-4)


def test_cpu_large_tiles_and_rows():
    """Shapes past one CPU tile (256 columns) and one parallel chunk."""
    compare("pixel_norm_silu", "cpu", (2, 40, 30, 20), torch.float32)
    compare("pixel_norm", "cpu", (2, 40, 30, 20), torch.float32, layout="channels_last")
    compare("modulated_mp_silu", "cpu", (3, 70, 9, 9), torch.float32, layout="channels_last")
    compare("mp_silu", "cpu", (2, 64, 32, 32), torch.bfloat16)


def test_cpu_16bit_roundtrip_is_exact(isa):
    """fp16/bf16 <-> fp32 conversions in the kernels: every bit pattern survives (NaN stays NaN)."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    for dtype in (torch.float16, torch.bfloat16):
        a = bits.view(dtype)
        y = ops.mp_sum(a, torch.zeros_like(a), t=0.0, backend="cpu")  # 1 * a + 0 * b
        nan = a.isnan()
        assert torch.equal(y.isnan(), nan)
        keep = ~nan & (a != 0)  # -0 + 0 is +0 in IEEE arithmetic
        assert torch.equal(y[keep].view(torch.int16), a[keep].view(torch.int16))


def test_cpu_16bit_rounding_matches_torch(isa):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, generator=g) * torch.logspace(-7, 4, 100_000)
    edges = [torch.arange(45000.0, 47000.0, 8.0), torch.arange(1.0, 64.0) * 2.0**-24]  # fp16
    x = torch.cat([x, *edges, -edges[0], torch.tensor([2.0e38, 3.0e38, -2.5e38])])
    for dtype in (torch.float16, torch.bfloat16):
        a = x.to(dtype)
        y = ops.mp_sum(a, a, t=0.5, backend="cpu")  # sqrt(2) a, rounded once from fp32
        ca = 0.5 / (0.5**0.5)
        expect = (a.float() * ca + a.float() * ca).to(dtype)
        ulp = (y.float() - expect.float()).abs() <= expect.float().abs() * 2**-7
        assert (ulp | (y == expect)).all()  # equality covers the infinities
        assert (y == expect).float().mean() > 0.99


@needs_triton
@pytest.mark.parametrize("op", list(OPS))
def test_triton_matches_reference(op):
    compare(op, "triton", (3, 13, 7, 5), torch.float32)
    compare(op, "triton", (2, 1, 4, 3), torch.float32)


@needs_triton
@pytest.mark.parametrize("op", ["pixel_norm_silu", "mp_sum_clamp", "modulated_mp_silu"])
def test_triton_layouts_and_16bit(op):
    compare(op, "triton", (2, 6, 5, 3), torch.float32, layout="channels_last")
    compare(op, "triton", (2, 6, 5, 3), torch.bfloat16, layout="strided")
    compare(op, "triton", (2, 6, 5, 3), torch.float16, zero_vector=op == "pixel_norm_silu")


@needs_triton
def test_triton_empty_and_other_dim():
    compare("pixel_norm", "triton", (0, 8, 4, 4), torch.float32)
    x = make_inputs("pixel_norm", (3, 4, 5, 6))[0].float()
    torch.testing.assert_close(
        ops.pixel_norm(x, dim=2, backend="triton"), ops.pixel_norm(x, dim=2, backend="reference")
    )


@pytest.fixture
def baseline_isa():
    """Runs the test on the baseline (non-AVX2) CPU kernels, then restores auto choice."""
    cpu_ext.set_isa("base")
    yield
    cpu_ext.set_isa("auto")


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_cpu_baseline_isa_matches_reference(baseline_isa, op, dtype):
    compare(op, "cpu", (3, 13, 7, 5), dtype)
    compare(op, "cpu", (2, 6, 5, 3), dtype, layout="channels_last")


@needs_triton
def test_triton_pixel_norm_sweeps_channel_chunks():
    """C larger than one block, along strided (inner > 1) and contiguous (inner == 1) rows."""
    compare("pixel_norm_silu", "triton", (1, 40, 16, 16), torch.float32)
    compare("pixel_norm", "triton", (2, 1100, 1, 1), torch.float32)


@needs_triton
@pytest.mark.parametrize("shape", [(2, 5, 14, 14), (3, 3, 6, 2), (2, 40, 1, 1)], ids=str)
def test_triton_pixel_norm_column_tiles(shape):
    """inner = 196 (two tiles, 196 % 16 != 0: 4-element alignment), inner = 12, inner = 1."""
    for op in ("pixel_norm", "pixel_norm_silu"):
        compare(op, "triton", shape, torch.float32)
        compare(op, "triton", shape, torch.bfloat16, layout="channels_last")
