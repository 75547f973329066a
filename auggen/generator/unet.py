"""EDM2 UNet and its preconditioning wrapper (Karras et al., CVPR 2024; EDM, NeurIPS 2022).

Module names follow NVlabs/edm2 (``enc['64x64_conv']``, ``dec['8x8_in0']``, ``emb_fourier``,
``Precond.unet`` ...) so upstream weights load with ``load_state_dict``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from auggen import ops
from auggen.generator.layers import Block, MPConv, MPFourier, mp_cat

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def activation_format(policy: str, x: torch.Tensor) -> torch.memory_format:
    """The layout the UNet's activations use. ``auto``: channels-last on CPU, where oneDNN runs
    the 32-64 channel 3x3 convolutions 1.2-2.3x faster and the tiny UNet samples ~1.2x faster
    (a train step: no change; benchmarks/bench_generator.py --memory-formats), and NCHW on
    CUDA until a GPU measurement (benchmarks/gpu_check.py) says otherwise. The auggen.ops
    kernels take either layout without a copy."""
    _check_policy(policy)
    if policy == "channels_last" or (policy == "auto" and x.device.type == "cpu"):
        return torch.channels_last
    return torch.contiguous_format


def _check_policy(policy: str) -> None:
    if policy not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {policy!r}")


def _format_of(x: torch.Tensor) -> torch.memory_format:
    if x.ndim == 4 and not x.is_contiguous():
        if x.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
    return torch.contiguous_format


def set_memory_format(module: nn.Module, policy: str) -> nn.Module:
    """Run every UNet below ``module`` with activations in ``policy``'s layout ("auto",
    "channels_last" or "contiguous"); outputs keep the layout of the input either way."""
    _check_policy(policy)
    for m in module.modules():
        if isinstance(m, UNet):
            m.memory_format = policy
    return module


class UNet(nn.Module):
    """Denoiser body F(x, c_noise, labels). ``labels``: float (N, label_dim) condition vectors."""

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int,
        model_channels: int = 192,
        channel_mult: tuple = (1, 2, 3, 4),
        channel_mult_noise: int | None = None,
        channel_mult_emb: int | None = None,
        num_blocks: int = 3,
        attn_resolutions: tuple = (16, 8),
        label_balance: float = 0.5,
        concat_balance: float = 0.5,
        backend: str | None = None,
        **block_kwargs,
    ):
        super().__init__()
        cblock = [model_channels * m for m in channel_mult]
        cnoise = model_channels * channel_mult_noise if channel_mult_noise else cblock[0]
        cemb = model_channels * channel_mult_emb if channel_mult_emb else max(cblock)
        self.label_dim = label_dim
        self.label_balance = label_balance
        self.concat_balance = concat_balance
        self.backend = backend
        self.memory_format = "auto"  # see set_memory_format
        block_kwargs = dict(block_kwargs, backend=backend)
        self.out_gain = nn.Parameter(torch.zeros([]))

        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, [], backend=backend)
        self.emb_label = MPConv(label_dim, cemb, [], backend=backend) if label_dim else None

        self.enc = nn.ModuleDict()
        cout = img_channels + 1  # the constant-ones channel
        for level, channels in enumerate(cblock):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, channels
                self.enc[f"{res}x{res}_conv"] = MPConv(cin, cout, [3, 3], backend=backend)
            else:
                self.enc[f"{res}x{res}_down"] = Block(
                    cout, cout, cemb, flavor="enc", resample_mode="down", **block_kwargs
                )
            for idx in range(num_blocks):
                cin, cout = cout, channels
                self.enc[f"{res}x{res}_block{idx}"] = Block(
                    cin, cout, cemb, flavor="enc", attention=res in attn_resolutions, **block_kwargs
                )

        self.dec = nn.ModuleDict()
        skips = [block.out_channels for block in self.enc.values()]
        for level, channels in reversed(list(enumerate(cblock))):
            res = img_resolution >> level
            if level == len(cblock) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(
                    cout, cout, cemb, flavor="dec", attention=True, **block_kwargs
                )
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, cemb, flavor="dec", **block_kwargs)
            else:
                self.dec[f"{res}x{res}_up"] = Block(
                    cout, cout, cemb, flavor="dec", resample_mode="up", **block_kwargs
                )
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), channels
                self.dec[f"{res}x{res}_block{idx}"] = Block(
                    cin, cout, cemb, flavor="dec", attention=res in attn_resolutions, **block_kwargs
                )
        self.out_conv = MPConv(cout, img_channels, [3, 3], backend=backend)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, labels: torch.Tensor | None):
        be = self.backend
        emb = self.emb_noise(self.emb_fourier(noise_labels))
        if self.emb_label is not None:
            lab = self.emb_label(labels.to(emb.dtype) * math.sqrt(labels.shape[1]))
            emb = ops.mp_sum(emb, lab.to(emb.dtype), t=self.label_balance, backend=be)
        emb = ops.mp_silu(emb, backend=be)

        out_format = _format_of(x)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        x = x.contiguous(memory_format=activation_format(self.memory_format, x))
        skips = []
        for name, block in self.enc.items():
            x = block(x) if "conv" in name else block(x, emb)
            skips.append(x)
        for name, block in self.dec.items():
            if "block" in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = block(x, emb)
        return self.out_conv(x, gain=self.out_gain).contiguous(memory_format=out_format)


class Precond(nn.Module):
    """EDM preconditioning D(x; σ) = c_skip x + c_out F(c_in x, ln(σ)/4) + learned log-variance."""

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int,
        use_fp16: bool = False,
        sigma_data: float = 0.5,
        logvar_channels: int = 128,
        **unet_kwargs,
    ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.sigma_data = sigma_data
        self.unet = UNet(img_resolution, img_channels, label_dim, **unet_kwargs)
        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, [], backend=unet_kwargs.get("backend"))

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        labels: torch.Tensor | None = None,
        return_logvar: bool = False,
    ):
        x = x.to(torch.float32)
        n = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        sigma = sigma.reshape(-1, 1, 1, 1).expand(n, 1, 1, 1)
        if self.label_dim:
            if labels is None:
                labels = torch.zeros(n, self.label_dim, device=x.device)
            labels = labels.to(torch.float32).reshape(-1, self.label_dim).expand(n, -1)
        else:
            labels = None
        dtype = torch.float16 if self.use_fp16 and x.device.type == "cuda" else torch.float32
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + sigma**2).sqrt()
        c_noise = sigma.flatten().log() / 4
        f_x = self.unet((c_in * x).to(dtype), c_noise, labels)
        d_x = c_skip * x + c_out * f_x.to(torch.float32)
        if not return_logvar:
            return d_x
        logvar = self.logvar_linear(self.logvar_fourier(c_noise)).reshape(-1, 1, 1, 1)
        return d_x, logvar.to(torch.float32)
