"""EDM2 power-function EMA and post-hoc EMA reconstruction (Karras et al., CVPR 2024, Sec. 3.1).

A power-function EMA with exponent γ averages the training trajectory with the profile
p_t(τ) = (γ+1) τ^γ / t^(γ+1) on [0, t]; its relative standard deviation is
σ_rel = sqrt((γ+1) / ((γ+2)² (γ+3))) (EDM2 Eq. 3). Snapshots of a few such averages, stored
during training, can be linearly combined afterwards into the average of any other profile by
least squares on the profiles' inner products (EDM2 Alg. 3 / App. C.2).

Snapshots may be stored in bf16 (``PowerFunctionEMA.snapshot``) to halve their disk: the
combination is accumulated in fp64 and returned in fp32, so the only loss is bf16's rounding of
each snapshot (relative 2^-8), scaled by the sum of |coefficients| (about 1-2 for stds inside
the tracked range, more when extrapolating to narrower ones).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

SNAPSHOT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def std_to_exp(std) -> np.ndarray:
    """γ for a relative std: the real root of γ³ + 7γ² + (16 - σ⁻²)γ + (12 - σ⁻²) = 0."""
    std = np.asarray(std, dtype=np.float64)
    if np.any(std <= 0) or np.any(std >= 0.2887):  # γ = 0 (a uniform average) gives 1/sqrt(12)
        raise ValueError(f"EMA std must be in (0, 0.2887), got {std.tolist()}")
    out = []
    for s in std.reshape(-1):
        k = s**-2
        roots = np.roots([1.0, 7.0, 16.0 - k, 12.0 - k])
        out.append(roots.real[np.abs(roots.imag) < 1e-9].max())
    return np.asarray(out).reshape(std.shape)


def exp_to_std(gamma) -> np.ndarray:
    gamma = np.asarray(gamma, dtype=np.float64)
    return np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def power_function_beta(std: float, t_next: float, t_delta: float) -> float:
    """Decay that keeps the average a power-function profile when t advances by t_delta."""
    return float((1 - t_delta / t_next) ** (std_to_exp(std) + 1))


def profile_inner(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
    """∫₀^∞ p_a(τ) p_b(τ) dτ for power profiles ending at t_a, t_b (broadcasting arrays)."""
    t_a, t_b = np.asarray(t_a, np.float64), np.asarray(t_b, np.float64)
    gamma_a, gamma_b = np.asarray(gamma_a, np.float64), np.asarray(gamma_b, np.float64)
    t_min = np.minimum(t_a, t_b)
    g = gamma_a + gamma_b + 1
    # (γa+1)(γb+1) t_min^g / (g t_a^(γa+1) t_b^(γb+1)), written with ratios to avoid overflow
    return (
        (gamma_a + 1)
        * (gamma_b + 1)
        / g
        * (t_min / t_a) ** (gamma_a + 1)
        * (t_min / t_b) ** (gamma_b + 1)
        / t_min
    )


def posthoc_coefficients(in_t, in_std, out_t, out_std) -> np.ndarray:
    """Weights X (len(in), len(out)) with Σᵢ X[i, j] p_i ≈ p_out_j in the L2 sense."""
    in_t, in_std = np.asarray(in_t, np.float64), np.asarray(in_std, np.float64)
    out_t, out_std = np.asarray(out_t, np.float64), np.asarray(out_std, np.float64)
    in_g, out_g = std_to_exp(in_std), std_to_exp(out_std)
    a = profile_inner(in_t[:, None], in_g[:, None], in_t[None, :], in_g[None, :])
    b = profile_inner(in_t[:, None], in_g[:, None], out_t[None, :], out_g[None, :])
    return np.linalg.lstsq(a, b, rcond=None)[0]


def posthoc_average(snapshots: list[tuple[float, float, dict]], out_t: float, out_std: float):
    """Combine snapshots ``(t, std, state_dict)`` into the EMA of ``out_std`` at time ``out_t``."""
    if not snapshots:
        raise ValueError("posthoc_average needs at least one snapshot")
    coef = posthoc_coefficients(
        [s[0] for s in snapshots], [s[1] for s in snapshots], [out_t], [out_std]
    )
    return weighted_sum(zip(coef[:, 0], (s[2] for s in snapshots)))


def weighted_sum(weighted: Iterable[tuple[float, dict]]) -> dict[str, torch.Tensor]:
    """Σ c·state over ``(c, state_dict)`` pairs, consumed one at a time (so snapshots can be
    loaded lazily: memory is one state plus the accumulator). Floating tensors are summed in
    fp64 and returned in fp32 or wider (bf16 snapshots give fp32); a tensor equal in every
    state (buffers such as Fourier frequencies) is returned as it is, not averaged."""
    ref, acc, same = None, {}, {}
    for c, sd in weighted:
        if ref is None:
            ref = dict(sd)
            same = {k: True for k in ref}
            acc = {
                k: torch.zeros_like(v, dtype=torch.float64)
                for k, v in ref.items()
                if v.is_floating_point()
            }
        for key, v in sd.items():
            same[key] = same[key] and torch.equal(v, ref[key])
            if key in acc:
                acc[key] += float(c) * v.to(torch.float64)
    if ref is None:
        raise ValueError("weighted_sum needs at least one state")
    out = {}
    for key, v in ref.items():
        if same[key] or key not in acc:
            out[key] = v.clone()
        else:
            out[key] = acc[key].to(torch.promote_types(v.dtype, torch.float32))
    return out


class PowerFunctionEMA:
    """Tracks one power-function EMA copy of ``net`` per std (EDM2's default 0.050 and 0.100)."""

    def __init__(self, net: nn.Module, stds=(0.050, 0.100)):
        self.stds = tuple(float(s) for s in stds)
        std_to_exp(self.stds)  # validates
        self.emas = [copy.deepcopy(net).eval().requires_grad_(False) for _ in self.stds]

    @torch.no_grad()
    def update(self, net: nn.Module, t_next: float, t_delta: float) -> None:
        """Average in ``net`` after the training clock moved to ``t_next`` by ``t_delta``."""
        src = dict(net.named_parameters())
        for std, ema in zip(self.stds, self.emas):
            beta = power_function_beta(std, t_next, t_delta)
            for name, p in ema.named_parameters():
                p.lerp_(src[name].detach().to(p.dtype), 1 - beta)
            for (_, b), (_, sb) in zip(ema.named_buffers(), net.named_buffers()):
                b.copy_(sb)

    def snapshot(self, dtype: str = "float32") -> dict[str, torch.Tensor]:
        """``state_dict`` with the averaged parameters cast to ``dtype`` (a key of
        ``SNAPSHOT_DTYPES``), for post-hoc EMA snapshots; buffers keep their own dtype, since
        they are copied, not averaged, and must stay exact."""
        cast = SNAPSHOT_DTYPES[dtype]
        out = {}
        for i, ema in enumerate(self.emas):
            params = {k for k, _ in ema.named_parameters()}
            for k, v in ema.state_dict().items():
                out[f"ema{i}.{k}"] = v.to(cast) if k in params and v.is_floating_point() else v
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"ema{i}.{k}": v for i, ema in enumerate(self.emas) for k, v in ema.state_dict().items()
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, ema in enumerate(self.emas):
            prefix = f"ema{i}."
            ema.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
