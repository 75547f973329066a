"""EDM2 power-function EMA and post-hoc EMA reconstruction (Karras et al., CVPR 2024, Sec. 3.1).

A power-function EMA with exponent γ averages the training trajectory with the profile
p_t(τ) = (γ+1) τ^γ / t^(γ+1) on [0, t]; its relative standard deviation is
σ_rel = sqrt((γ+1) / ((γ+2)² (γ+3))) (EDM2 Eq. 3). Snapshots of a few such averages, stored
during training, can be linearly combined afterwards into the average of any other profile by
least squares on the profiles' inner products (EDM2 Alg. 3 / App. C.2).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


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
    in_t = [s[0] for s in snapshots]
    in_std = [s[1] for s in snapshots]
    coef = posthoc_coefficients(in_t, in_std, [out_t], [out_std])[:, 0]
    out = {}
    for key, ref in snapshots[0][2].items():
        if not ref.is_floating_point() or all(torch.equal(ref, s[2][key]) for s in snapshots):
            out[key] = ref.clone()  # buffers (Fourier frequencies) are not averaged
            continue
        acc = torch.zeros_like(ref, dtype=torch.float64)
        for c, (_, _, sd) in zip(coef, snapshots):
            acc += float(c) * sd[key].to(torch.float64)
        out[key] = acc.to(ref.dtype)
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
