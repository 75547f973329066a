"""The tiny launches a backend must pass before it serves a device: each fused op, forward and
backward, against the fp64 reference on the same (rounded) inputs. ``auggen.ops._backend``
runs ``run_selftest`` once per (backend, device, dtype family) and drops a backend that
raises or mismatches; the tolerances catch broken kernels, not rounding.

Inputs come from a private generator on the CPU, so the global random state is untouched and
a run with the self-test gives the same numbers as one without.
"""

from __future__ import annotations

import math
from functools import partial

import torch

# (atol, rtol) against fp64 on the rounded inputs: a few units of the dtype's last place
TOLERANCES = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (6e-2, 4e-2),
}
SHAPE = (2, 8, 3, 5)  # N, C, H, W: odd spatial sizes, C past one warp-row of 4-packs


class SelfTestError(RuntimeError):
    """A backend failed its self-test; ``op`` names the op, the message says why."""

    def __init__(self, op: str, reason: str):
        super().__init__(f"{op}: {reason}")
        self.op = op
        self.reason = reason


def _cases():
    """op name -> (call(backend, *tensors) -> outputs, number of (N, C, H, W) inputs, takes c)."""
    from auggen import ops  # the public ops sit above the backend that runs this

    return {
        "mp_silu": (lambda b, x: (ops.mp_silu(x, backend=b),), 1, False),
        "mp_sum": (lambda b, x, y: (ops.mp_sum(x, y, 0.3, backend=b),), 2, False),
        "mp_sum_clamp": (lambda b, x, y: (ops.mp_sum_clamp(x, y, 0.3, 1.0, backend=b),), 2, False),
        "pixel_norm": (lambda b, x: (ops.pixel_norm(x, backend=b),), 1, False),
        "pixel_norm_silu": (lambda b, x: ops.pixel_norm_silu(x, backend=b), 1, False),
        "modulated_mp_silu": (lambda b, x, c: (ops.modulated_mp_silu(x, c, backend=b),), 1, True),
    }


def _inputs(n_tensors: int, takes_c: bool, dtype: torch.dtype, g: torch.Generator):
    xs = [torch.randn(SHAPE, generator=g, dtype=torch.float64) * 1.5 for _ in range(n_tensors)]
    if n_tensors == 2:  # keep mp_sum(a, b, 0.3) off the clip at 1, where rounding flips the mask
        v = (0.7 * xs[0] + 0.3 * xs[1]) / math.sqrt(0.7**2 + 0.3**2)
        far = ((v.abs() - 1.0).abs() > 0.15).to(torch.float64)
        xs = [t * far for t in xs]
    if takes_c:
        xs.append(torch.rand(SHAPE[:2], generator=g, dtype=torch.float64) + 0.5)
    return [t.to(dtype).double() for t in xs]  # values exactly representable in dtype


def _check(op: str, what: str, got: torch.Tensor, want: torch.Tensor, dtype) -> None:
    got = got.detach().double().cpu()
    if got.shape != want.shape:
        raise SelfTestError(
            op, f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        )
    if not torch.isfinite(got).all():
        raise SelfTestError(op, f"{what} holds NaN/inf where the reference is finite")
    atol, rtol = TOLERANCES[dtype]
    err = (got - want).abs() - rtol * want.abs()
    worst = float(err.max()) if err.numel() else 0.0
    if worst > atol * max(1.0, float(want.abs().max())):
        i = int(err.flatten().argmax())
        raise SelfTestError(
            op,
            f"{what} differs from the fp64 reference: {float(got.flatten()[i]):.6g} where "
            f"{float(want.flatten()[i]):.6g} was expected ({dtype}, tolerance {atol:g} + "
            f"{rtol:g} * |expected|)",
        )


def _grad(outs, inputs, grads):
    """Vector-Jacobian products through a scalar: ``autograd.grad`` with ``grad_outputs``
    imports sympy on first use (~0.4 s), more than the whole self-test."""
    loss = sum((o * g).sum() for o, g in zip(outs, grads))
    return torch.autograd.grad(loss, inputs)


def _run_case(op, call, n_tensors, takes_c, backend, device, dtype, g) -> None:
    inputs = _inputs(n_tensors, takes_c, dtype, g)
    ref_in = [t.clone().requires_grad_() for t in inputs]
    ref_out = call("reference", *ref_in)
    grads = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(dtype) for o in ref_out]
    ref_grads = _grad(ref_out, ref_in, [t.double() for t in grads])
    dev_in = [t.to(device=device, dtype=dtype).requires_grad_() for t in inputs]
    out = call(backend, *dev_in)
    dev_grads = _grad(out, dev_in, [t.to(device) for t in grads])
    for k, (o, r) in enumerate(zip(out, ref_out)):
        _check(op, f"output {k}", o, r.detach(), dtype)
    for k, (gr, r) in enumerate(zip(dev_grads, ref_grads)):
        _check(op, f"gradient of input {k}", gr, r, dtype)


def _attention_case(device, dtype, g) -> None:
    from auggen.ops.attention import mp_attention, mp_attention_ref  # as for ops above

    qkv = [torch.randn(1, 2, 20, 8, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]
    ref_in = [t.double().requires_grad_() for t in qkv]
    ref = mp_attention_ref(*ref_in)
    dout = torch.randn(ref.shape, generator=g, dtype=torch.float64).to(dtype)
    ref_grads = _grad([ref], ref_in, [dout.double()])
    dev_in = [t.to(device).requires_grad_() for t in qkv]
    out = mp_attention(*dev_in, backend="triton", precision="ieee")
    grads = _grad([out], dev_in, [dout.to(device)])
    _check("mp_attention", "output", out, ref.detach(), dtype)
    for k, (gr, r) in enumerate(zip(grads, ref_grads)):
        _check("mp_attention", f"gradient of input {'qkv'[k]}", gr, r, dtype)


def run_selftest(backend: str, device: torch.device, dtype: torch.dtype, fail: bool) -> int:
    """Raises ``SelfTestError`` naming the first op that fails; returns the number of ops.

    ``fail``: fault injection (``AUGGEN_BACKEND_FAIL``): the first op fails, as a real
    failure would.
    """
    g = torch.Generator().manual_seed(20)
    steps = [
        (op, partial(_run_case, op, *case, backend, device, dtype, g))
        for op, case in _cases().items()
    ]
    if backend == "triton" and device.type == "cuda":  # the fused attention kernel too
        steps.append(("mp_attention", partial(_attention_case, device, dtype, g)))
    off = dict(device_type=device.type, enabled=False)
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(**off):
        for op, step in steps:
            try:
                if fail:
                    raise SelfTestError(
                        op, f"AUGGEN_BACKEND_FAIL names {backend!r} (fault injection)"
                    )
                step()
                if device.type == "cuda":  # an asynchronous fault surfaces here, not later
                    torch.cuda.synchronize(device)
            except SelfTestError:
                raise
            except Exception as e:  # a load, compile or launch error: which op, what it said
                raise SelfTestError(op, f"{type(e).__name__}: {e}") from e
    return len(steps)
