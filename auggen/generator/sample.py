"""EDM sampling (Karras et al., NeurIPS 2022, Alg. 1): deterministic Heun, Euler for comparison.

Conditions are arbitrary real vectors (one-hot, α·c_i + β·c_j, Dirichlet mixes); each image's
initial noise comes from its own ``torch.Generator`` seeded by its seed, on the CPU, so an image
does not depend on its batch neighbours, the batch size or the device.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from tqdm.auto import tqdm

from auggen.generator.layers import inference_weights
from auggen.generator.score_mix import check_score_mix, score_mixed

SOLVERS = ("heun", "euler")


def sigma_steps(
    num_steps: int = 32,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device=None,
) -> torch.Tensor:
    """EDM time steps t_0 > ... > t_{N-1} = sigma_min, then t_N = 0 (EDM Eq. 5), float64."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    frac = i / max(num_steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    t = (hi + frac * (lo - hi)) ** rho
    return torch.cat([t, torch.zeros_like(t[:1])])


def initial_noise(seeds, shape, device=None) -> torch.Tensor:
    """Unit Gaussian noise (M, *shape); row m comes only from ``seeds[m]``."""
    rows = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        rows.append(torch.randn(shape, generator=g))
    return torch.stack(rows).to(device)


def _check_inputs(net, conditions, seeds) -> tuple[torch.Tensor, list[int]]:
    label_dim = getattr(net, "label_dim", None)
    if label_dim is None:
        raise TypeError(f"net must expose label_dim (a Precond), got {type(net).__name__}")
    conditions = torch.as_tensor(conditions)
    if not conditions.is_floating_point():
        conditions = conditions.to(torch.float32)
    if conditions.ndim != 2 or conditions.shape[1] != label_dim:
        raise ValueError(
            f"conditions must be float (M, label_dim={label_dim}), got {tuple(conditions.shape)}"
        )
    if not torch.isfinite(conditions).all():
        raise ValueError("conditions contain NaN or Inf")
    seeds = [int(s) for s in torch.as_tensor(seeds).reshape(-1).tolist()]
    if len(seeds) != len(conditions):
        raise ValueError(
            f"seeds and conditions must have the same count, got {len(seeds)} seeds "
            f"and {len(conditions)} conditions"
        )
    return conditions.to(torch.float32), seeds


def _guided(net, gnet, guidance: float):
    """D_g = D_ref + w (D - D_ref); without gnet the reference is ``net`` with zero conditions."""
    if guidance == 1.0:
        return lambda x, t, c: net(x, t, c).to(torch.float64)
    if gnet is None:

        def denoise(x, t, c):
            d = net(torch.cat([x, x]), t, torch.cat([c, torch.zeros_like(c)])).to(torch.float64)
            d_cond, d_ref = d.chunk(2)
            return d_ref.lerp(d_cond, guidance)

        return denoise

    def denoise(x, t, c):
        d_ref = gnet(x, t, c).to(torch.float64)
        return d_ref.lerp(net(x, t, c).to(torch.float64), guidance)

    return denoise


def _solve(denoise, x, cond, steps: torch.Tensor, solver: str) -> torch.Tensor:
    """Integrate dx/dt = (x - D(x; t)) / t from t_0 to 0; x is float64."""
    n = len(steps) - 1
    for i in range(n):
        t_cur, t_next = steps[i], steps[i + 1]
        d = (x - denoise(x.to(torch.float32), t_cur.to(torch.float32), cond)) / t_cur
        x_next = x + (t_next - t_cur) * d
        if solver == "heun" and i < n - 1:  # the final step to t = 0 stays Euler
            d2 = (
                x_next - denoise(x_next.to(torch.float32), t_next.to(torch.float32), cond)
            ) / t_next
            x_next = x + (t_next - t_cur) * 0.5 * (d + d2)
        x = x_next
    return x


def _check_sample_args(net, conditions, seeds, weights, gnet, batch_size, solver):
    """``sample``'s argument checks; -> (conditions, seeds as ints, weights)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if weights is None:
        conditions, seeds = _check_inputs(net, conditions, seeds)
    else:
        conditions, weights = check_score_mix(conditions, weights, net.label_dim)
        seeds = _check_inputs(net, conditions[:, 0], seeds)[1]
    if gnet is not None and getattr(gnet, "label_dim", net.label_dim) != net.label_dim:
        raise ValueError(f"gnet.label_dim must equal net.label_dim={net.label_dim}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
    return conditions, seeds, weights


def _sample_batch(denoise, noise, cond, steps, solver, ctx, channels_last: bool, clip: bool):
    """One batch from its initial noise: the ODE in float64 (the net under ``ctx``), the
    images in float32 on the CPU."""
    x = noise.to(steps.device).to(torch.float64) * steps[0]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with ctx:
        x = _solve(denoise, x, cond, steps, solver)
    x = x.to(torch.float32)
    return (x.clamp(-1, 1) if clip else x).cpu()


DEFAULT_BATCH = 256  # images per network call when the caller does not say


@torch.no_grad()
def sample(
    net: nn.Module,
    conditions: torch.Tensor,
    seeds,
    num_steps: int = 32,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    guidance: float = 1.0,
    gnet: nn.Module | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    solver: str = "heun",
    autocast: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    clip: bool = True,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample (M, C, H, W) float images in [-1, 1] for condition vectors (M, label_dim).

    Heun takes 2N - 1 denoiser evaluations per network (the last step is Euler); ``solver=
    "euler"`` takes N. ``guidance`` != 1 uses ``gnet`` (autoguidance) or, without one, the same
    net with zero conditions (classifier-free guidance). ``autocast`` runs the net in bf16;
    ``compile`` wraps the denoiser in ``torch.compile(mode="reduce-overhead")`` (CUDA graphs
    on CUDA). ``clip=False`` returns the raw ODE solution (for analytic tests). ``weights``
    (M, k), convex: score mixing (``auggen.generator.score_mix``) of ``conditions`` (M, k,
    label_dim), one network call per evaluation on ``k x`` the batch.
    """
    conditions, seeds, weights = _check_sample_args(
        net, conditions, seeds, weights, gnet, batch_size, solver
    )
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    shape = (net.img_channels, net.img_resolution, net.img_resolution)
    steps = sigma_steps(num_steps, sigma_min, sigma_max, rho, device=device)
    raw, raw_nets = net, [m for m in (net, gnet) if isinstance(m, nn.Module)]
    if compile:
        net = torch.compile(net, mode="reduce-overhead")
        gnet = torch.compile(gnet, mode="reduce-overhead") if gnet is not None else None
    denoise = _guided(net, gnet, float(guidance))
    if weights is not None:
        denoise = score_mixed(denoise)
    ctx = (
        torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    )
    m = len(seeds)
    bs = batch_size or min(max(m, 1), DEFAULT_BATCH)  # bounded: one huge batch fails to launch
    out = []
    # eval mode for the run: in training mode MPConv would renormalise the weights in place
    modes = [(mod, mod.training) for mod in (net, gnet) if isinstance(mod, nn.Module)]
    for mod, _ in modes:
        mod.eval()
    # Weights normalised, scaled and cast once per run (a compiled net would redo it per call).
    wdtype = torch.bfloat16 if autocast else next((p.dtype for p in raw.parameters()), None)
    baked = contextlib.ExitStack()
    # The next batch's noise (0.2 ms an image at 64 px, one generator per seed) is drawn on a
    # host thread while this batch samples; on a GPU that hides it entirely.
    starts = range(0, m, bs)
    try:
        prefetch = baked.enter_context(ThreadPoolExecutor(max_workers=1))
        pending = prefetch.submit(initial_noise, seeds[:bs], shape)
        for mod in raw_nets if wdtype is not None else ():
            baked.enter_context(inference_weights(mod, wdtype))
        for lo in tqdm(starts, total=len(starts), disable=not progress, desc="sample"):
            cond = conditions[lo : lo + bs].to(device)
            if weights is not None:
                cond = (cond, weights[lo : lo + bs].to(device))
            noise = pending.result()
            if lo + bs < m:
                pending = prefetch.submit(initial_noise, seeds[lo + bs : lo + 2 * bs], shape)
            out.append(_sample_batch(denoise, noise, cond, steps, solver, ctx, channels_last, clip))
    finally:
        baked.close()
        for mod, was_training in modes:
            mod.train(was_training)
    if not out:
        return torch.empty(0, *shape)
    return torch.cat(out)


def batch_from_memory(
    free_bytes: int, per_image_bytes: int, budget: float = 0.6, lo: int = 8, hi: int = 2048
) -> int:
    """The largest power of two of images whose activations fit ``budget`` of free memory."""
    n = int(budget * free_bytes // max(int(per_image_bytes), 1))
    n = 1 << (max(n, 1).bit_length() - 1)
    return max(lo, min(hi, n))


@torch.no_grad()
def auto_batch_size(net: nn.Module, device, autocast: bool = False, probe: int = 8) -> int:
    """Images per sampler call: from the GPU's free memory and the peak memory of one
    ``probe``-image denoiser call (activations scale with the batch); DEFAULT_BATCH on CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return DEFAULT_BATCH
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    x = torch.randn(probe, net.img_channels, net.img_resolution, net.img_resolution, device=device)
    sigma = torch.ones(probe, device=device)
    labels = torch.zeros(probe, net.label_dim, device=device) if net.label_dim else None
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    was_training = net.training
    net.eval()
    try:
        with ctx:
            net(x, sigma, labels)
    finally:
        net.train(was_training)
    per_image = (torch.cuda.max_memory_allocated(device) - base) / probe
    free, _ = torch.cuda.mem_get_info(device)
    return batch_from_memory(free, int(per_image * 3))  # x 3: the solver's own tensors


def sample_euler(net, conditions, seeds, num_steps: int = 32, **kw) -> torch.Tensor:
    """First-order Euler sampling: ``num_steps`` denoiser evaluations."""
    return sample(net, conditions, seeds, num_steps=num_steps, solver="euler", **kw)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to uint8 pixels: x*127.5 + 128, clipped, truncated (EDM2's decoding)."""
    return (x.to(torch.float32) * 127.5 + 128).clip(0, 255).to(torch.uint8)
