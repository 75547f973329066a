"""Shared test cases for the fused ops: each op as (call, input makers), tolerances per dtype."""

import torch

from auggen import ops

# (atol, rtol) against an fp64 reference computed from the same (rounded) inputs
TOLERANCES = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 2e-2),
}

# op name -> (call(backend, *tensors) -> tuple of outputs, number of (N, C, ...) tensor inputs,
#             takes a (N, C) modulation tensor)
OPS = {
    "pixel_norm": (lambda b, x: (ops.pixel_norm(x, backend=b),), 1, False),
    "pixel_norm_silu": (lambda b, x: ops.pixel_norm_silu(x, backend=b), 1, False),
    "mp_silu": (lambda b, x: (ops.mp_silu(x, backend=b),), 1, False),
    "mp_sum": (lambda b, x, y: (ops.mp_sum(x, y, 0.3, backend=b),), 2, False),
    "mp_sum_clamp": (lambda b, x, y: (ops.mp_sum_clamp(3 * x, y, 0.3, 2.0, backend=b),), 2, False),
    "modulated_mp_silu": (lambda b, x, c: (ops.modulated_mp_silu(x, c, backend=b),), 1, True),
}


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as x in another memory layout (4-d tensors)."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other column of a wider tensor: not dense
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    if layout == "offset":  # dense but starting one element into its storage (misaligned)
        flat = torch.zeros(x.numel() + 1, dtype=x.dtype, device=x.device)
        flat[1:] = x.reshape(-1)
        return flat[1:].view(x.shape)
    if layout == "transposed":  # dense, H and W swapped in memory
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    raise ValueError(f"unknown layout {layout!r}")


def make_inputs(op: str, shape, seed: int = 0, zero_vector: bool = False):
    """fp64 inputs for ``op``: the (N, C, ...) tensors, then c (N, C) if the op takes one."""
    g = torch.Generator().manual_seed(seed)
    _, n_tensors, takes_c = OPS[op]
    xs = [torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 for _ in range(n_tensors)]
    if op == "mp_sum_clamp":  # keep values off the clip boundary, where 16-bit rounding
        v = (0.7 * 3 * xs[0] + 0.3 * xs[1]) / (0.7**2 + 0.3**2) ** 0.5  # flips the gradient mask
        near = ((v.abs() - 2.0).abs() < 0.1).to(torch.float64)
        xs = [t * (1 - near) for t in xs]
    if zero_vector and xs[0].numel():
        xs[0][0, :, 0, 0] = 0.0  # an all-zero vector along C
    if takes_c:
        xs.append(torch.randn(shape[:2], generator=g, dtype=torch.float64) + 0.5)
    return xs


def run_and_grad(op: str, backend: str, inputs, grads_out):
    """Outputs of ``op`` and gradients of sum(out * grad_out) w.r.t. every input."""
    call = OPS[op][0]
    inputs = [t.detach().requires_grad_() for t in inputs]
    outs = call(backend, *inputs)
    loss = sum((o * g.to(o.dtype)).sum() for o, g in zip(outs, grads_out))
    grads = torch.autograd.grad(loss, inputs) if loss.requires_grad else [None] * len(inputs)
    return outs, grads


def compare(op: str, backend: str, shape, dtype, layout: str = "contiguous", zero_vector=False):
    """Asserts ``backend`` matches the fp64 reference, forward and backward."""
    inputs64 = make_inputs(op, shape, zero_vector=zero_vector)
    n_tensors = OPS[op][1]
    rounded = [t.to(dtype) for t in inputs64]
    laid_out = [to_layout(t, layout) if k < n_tensors else t for k, t in enumerate(rounded)]
    ref_in = [t.double() for t in rounded]
    g = torch.Generator().manual_seed(1)
    n_out = 2 if op == "pixel_norm_silu" else 1
    grads_out = [torch.randn(shape, generator=g).to(dtype).double() for _ in range(n_out)]

    outs, grads = run_and_grad(op, backend, laid_out, grads_out)
    ref_outs, ref_grads = run_and_grad(op, "reference", ref_in, grads_out)
    atol, rtol = TOLERANCES[dtype]
    for o, r in zip(outs, ref_outs):
        assert o.dtype == dtype and o.shape == r.shape
        torch.testing.assert_close(o.double(), r, atol=atol, rtol=rtol)
    for k, (gr, r) in enumerate(zip(grads, ref_grads)):
        if r is None:
            continue
        # c's gradient sums over space: its error grows with the number of summed terms
        scale = max([1.0, *r.abs().flatten().tolist()]) if k >= n_tensors else 1.0
        torch.testing.assert_close(gr.double(), r, atol=atol * scale, rtol=rtol)
    return outs
