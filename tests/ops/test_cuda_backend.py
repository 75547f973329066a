"""CUDA and Triton backends on a GPU against the fp64 reference (skipped without CUDA)."""

import pytest
import torch

from auggen import ops
from tests.ops._cases import OPS, TOLERANCES, make_inputs, run_and_grad, to_layout

pytestmark = pytest.mark.gpu

GPU_BACKENDS = [b for b in ("cuda", "triton") if b in ops.backends()]


def _compare_gpu(op, backend, shape, dtype, layout="contiguous"):
    inputs64 = make_inputs(op, shape, zero_vector=op.startswith("pixel_norm"))
    n_tensors = OPS[op][1]
    rounded = [t.to(dtype) for t in inputs64]
    gpu_in = [
        to_layout(t.cuda(), layout) if k < n_tensors else t.cuda() for k, t in enumerate(rounded)
    ]
    g = torch.Generator().manual_seed(1)
    n_out = 2 if op == "pixel_norm_silu" else 1
    grads_out = [torch.randn(shape, generator=g).to(dtype).double() for _ in range(n_out)]
    outs, grads = run_and_grad(op, backend, gpu_in, [t.cuda() for t in grads_out])
    ref_outs, ref_grads = run_and_grad(op, "reference", [t.double() for t in rounded], grads_out)
    atol, rtol = TOLERANCES[dtype]
    for o, r in zip(outs, ref_outs):
        torch.testing.assert_close(o.double().cpu(), r, atol=atol, rtol=rtol)
    for k, (gr, r) in enumerate(zip(grads, ref_grads)):
        scale = max([1.0, *r.abs().flatten().tolist()]) if k >= n_tensors else 1.0
        torch.testing.assert_close(gr.double().cpu(), r, atol=atol * scale, rtol=rtol)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "offset"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_matches_reference(backend, op, dtype, layout):
    for shape in [(3, 13, 7, 5), (2, 1, 4, 3), (0, 8, 4, 4), (4, 300, 6, 6)]:
        _compare_gpu(op, backend, shape, dtype, layout)


def test_auto_backend_on_cuda_tensors():
    from auggen.ops._backend import resolve

    expect = next(b for b in ("cuda", "triton", "reference") if b in ops.backends() + ["reference"])
    assert resolve(None, torch.zeros(2, device="cuda")) == expect
