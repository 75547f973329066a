"""mp_attention: every backend vs the fp64 definition, forward and backward, odd L and D.

On the CPU the Triton kernel runs under TRITON_INTERPRET=1 (set by conftest): shapes stay tiny.
"""

import math

import pytest
import torch

from auggen.ops import _backend
from auggen.ops.attention import (
    _fwd_op,
    mp_attention,
    mp_attention_ref,
    resolve_backend,
)

triton = pytest.importorskip("triton")

# Per-dtype (atol, rtol) against the fp64 reference; outputs and grads are O(1).
TOL = {
    torch.float32: (2e-5, 1e-4),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (3e-2, 3e-2),
}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(shape, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    # Rows of very different norms: the in-kernel normalisation has to undo them.
    scale = torch.rand(*shape[:-1], 1, generator=g, dtype=torch.float64) * 5 + 0.1
    return [
        (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device) for _ in "qkv"
    ]


def _ref_fwd_bwd(q, k, v, grad):
    q, k, v = (t.detach().double().cpu().requires_grad_(True) for t in (q, k, v))
    out = mp_attention_ref(q, k, v)
    return out, torch.autograd.grad(out, (q, k, v), grad.double().cpu())


def _check(backend, shape, dtype, seed=0, device="cpu"):
    q64, k64, v64 = _inputs(shape, seed)
    grad = torch.randn(
        shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64
    )
    ref, ref_grads = _ref_fwd_bwd(q64, k64, v64, grad)
    q, k, v = (t.to(device, dtype).requires_grad_(True) for t in (q64, k64, v64))
    out = mp_attention(q, k, v, backend=backend)
    assert out.dtype == dtype and out.shape == shape
    grads = torch.autograd.grad(out, (q, k, v), grad.to(device, dtype))
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out.double().cpu(), ref, atol=atol, rtol=rtol)
    # dq, dk, dv scale like 1/||row||: compare relative to the largest entry of the three
    # (dq and dk are exactly 0 when L == 1: the single key gets all the weight).
    peak = max(max(w.abs().max().item() for w in ref_grads), 1e-3)
    for name, got, want in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(
            got.double().cpu() / peak, want / peak, atol=atol, rtol=rtol, msg=f"d{name} {dtype}"
        )


SHAPES = [(1, 1, 1, 16), (2, 1, 17, 24), (1, 2, 33, 64)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_matches_fp64_reference(shape, dtype):
    _check("triton", shape, dtype, device=DEVICE)


@pytest.mark.parametrize("shape", [(1, 1, 17, 40), (1, 1, 9, 96)])
def test_triton_odd_head_dims(shape):
    _check("triton", shape, torch.float32, device=DEVICE)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 3, 17, 24), (1, 2, 64, 64)])
def test_torch_backends_match_fp64_reference(backend, shape, dtype):
    _check(backend, shape, dtype)


def test_reference_is_the_definition():
    """Pixel norm along D (EDM2 ``normalize``), then softmax(q kᵀ / sqrt(D)) v, by hand."""
    q, k, v = _inputs((1, 2, 5, 24), seed=3)

    def norm(x):
        return x / (1e-4 + x.norm(dim=-1, keepdim=True) / math.sqrt(24))

    w = torch.einsum("nhqc,nhkc->nhqk", norm(q), norm(k)) / math.sqrt(24)
    want = torch.einsum("nhqk,nhkc->nhqc", w.softmax(-1), norm(v))
    torch.testing.assert_close(mp_attention_ref(q, k, v), want)


def test_triton_is_invariant_to_row_scale():
    # Up to eps (1e-4 against unit-RMS rows) the output ignores each row's scale.
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 2, 17, 16, generator=g).to(DEVICE) for _ in "qkv")
    s = (torch.rand(1, 2, 17, 1, generator=g) * 100 + 1).to(DEVICE)
    a = mp_attention(q, k, v, backend="triton")
    b = mp_attention(q * s, k * s.flip(2), v * s.flip(3), backend="triton")
    torch.testing.assert_close(a, b, atol=5e-4, rtol=0)


def test_triton_strided_inputs_and_lse_gradient():
    """Non-contiguous q/k/v (EDM2 permutes its qkv conv), a stride-0 grad, and d(lse)."""
    n, h, length, d = 2, 2, 17, 16
    g = torch.Generator().manual_seed(5)
    qkv = torch.randn(n, length, 3, h, d, generator=g, dtype=torch.float64)
    ref_in = [qkv[:, :, i].transpose(1, 2).clone().requires_grad_(True) for i in range(3)]
    ref_out = mp_attention_ref(*ref_in)
    qn, kn = (x / (1e-4 + x.norm(dim=-1, keepdim=True) / math.sqrt(d)) for x in ref_in[:2])
    ref_lse = (qn @ kn.transpose(-1, -2) / math.sqrt(d)).logsumexp(-1)
    glse = torch.randn(n, h, length, generator=g, dtype=torch.float64)
    (ref_out.sum() + (ref_lse * glse).sum()).backward()

    qkv32 = qkv.float().to(DEVICE).requires_grad_(True)
    q, k, v = (qkv32[:, :, i].transpose(1, 2) for i in range(3))
    assert not q.is_contiguous()
    out, lse = _fwd_op(q, k, v, 1e-4, "ieee")
    torch.testing.assert_close(out.double().cpu(), ref_out, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(lse.double().cpu(), ref_lse, atol=2e-5, rtol=1e-4)
    (out.sum() + (lse * glse.float().to(DEVICE)).sum()).backward()
    want = torch.stack([x.grad.transpose(1, 2) for x in ref_in], dim=2)
    torch.testing.assert_close(qkv32.grad.double().cpu(), want, atol=1e-4, rtol=1e-4)


def test_zero_rows_have_finite_gradients():
    q, k, v = (t.float() for t in _inputs((1, 1, 5, 16), seed=6))
    q[0, 0, 2] = 0
    k[0, 0, 1] = 0
    _, ref_grads = _ref_fwd_bwd(q, k, v, torch.ones(1, 1, 5, 16))
    q, k, v = (t.to(DEVICE).requires_grad_(True) for t in (q, k, v))
    mp_attention(q, k, v, backend="triton").sum().backward()
    for got, want in zip((q.grad, k.grad, v.grad), ref_grads):
        assert torch.isfinite(got).all()
        peak = want.abs().max().item()
        torch.testing.assert_close(got.double().cpu() / peak, want / peak, atol=1e-5, rtol=1e-4)


def test_opcheck():
    g = torch.Generator().manual_seed(7)
    args = [torch.randn(1, 2, 5, 16, generator=g).to(DEVICE).requires_grad_(True) for _ in "qkv"]
    torch.library.opcheck(_fwd_op, (*args, 1e-4, "ieee"))


def test_compile_fullgraph_auto_path():
    q, k, v = (t.float() for t in _inputs((2, 2, 16, 32), seed=8))
    fn = torch.compile(lambda a, b, c: mp_attention(a, b, c), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(fn(q, k, v), mp_attention_ref(q, k, v), atol=1e-5, rtol=1e-4)


def test_compile_fullgraph_traces_triton_custom_op():
    q, k, v = (t.float().to(DEVICE).requires_grad_(True) for t in _inputs((1, 1, 9, 16), seed=9))

    def fn(a, b, c):
        return mp_attention(a, b, c, backend="triton").square().sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    want = torch.autograd.grad(fn(q, k, v), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_auto_backend_choice():
    x = torch.randn(1, 1, 4, 16)
    assert resolve_backend(None, x) == "cpu"  # the interpreter is never picked automatically
    assert resolve_backend(None, x.double()) == "cpu"
    assert resolve_backend("triton", x.double()) == "reference"  # as the other ops do
    if torch.cuda.is_available():
        assert resolve_backend(None, x.cuda()) == "triton"
        assert resolve_backend("cuda", x.cuda()) == "triton"  # no separate CUDA kernel
        assert resolve_backend(None, x.cuda().double()) == "cpu"


def test_bad_inputs_name_the_argument(monkeypatch):
    x = torch.randn(1, 2, 5, 16)
    with pytest.raises(TypeError, match="q must be a floating"):
        mp_attention(x.int(), x, x)
    with pytest.raises(ValueError, match="k must be 4-d"):
        mp_attention(x, x[0], x)
    with pytest.raises(ValueError, match="q and v must have the same shape"):
        mp_attention(x, x, torch.randn(1, 2, 6, 16))
    with pytest.raises(TypeError, match="q and k must have the same dtype"):
        mp_attention(x, x.double(), x)
    with pytest.raises(ValueError, match="backend must be one of"):
        mp_attention(x, x, x, backend="flash")
    with pytest.raises(ValueError, match="backend 'cuda' needs CUDA"):
        mp_attention(x, x, x, backend="cuda")
    monkeypatch.setattr(_backend, "TRITON_INTERPRET", False)
    with pytest.raises(ValueError, match="backend 'triton' needs CUDA tensors"):
        mp_attention(x, x, x, backend="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 12, 256, 64), (2, 9, 64, 64), (1, 1, 200, 96)])
def test_triton_gpu_edm2_shapes(shape, dtype):
    _check("triton", shape, dtype, device="cuda")


@pytest.mark.gpu
def test_triton_gpu_inductor_compile_with_edm2_layout():
    """EDM2 Block layout (qkv conv output viewed as (N, heads, ch, 3, HW)) under inductor."""
    n, heads, ch, hw = 2, 9, 64, 256
    qkv = torch.randn(n, heads * ch * 3, hw, device="cuda", dtype=torch.bfloat16)
    qkv.requires_grad_(True)

    def block_attention(x):
        q, k, v = (t.transpose(2, 3) for t in x.reshape(n, heads, ch, 3, hw).unbind(3))
        return mp_attention(q, k, v).transpose(2, 3).reshape(n, heads * ch, hw)

    compiled = torch.compile(block_attention, fullgraph=True)
    got = compiled(qkv)
    (dgot,) = torch.autograd.grad(got.float().square().sum(), qkv)
    x64 = qkv.detach().double().requires_grad_(True)
    q, k, v = (t.transpose(2, 3) for t in x64.reshape(n, heads, ch, 3, hw).unbind(3))
    want = mp_attention_ref(q, k, v).transpose(2, 3).reshape(n, heads * ch, hw)
    (dwant,) = torch.autograd.grad(want.square().sum(), x64)
    torch.testing.assert_close(got.double(), want, atol=3e-2, rtol=3e-2)
    peak = dwant.abs().max().item()
    torch.testing.assert_close(dgot.double() / peak, dwant / peak, atol=3e-2, rtol=3e-2)
