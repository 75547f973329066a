"""What the configured networks cost, counted from the built nets (``--plan``, calibration,
score-mixing rows): FLOPs of one forward, parameters, denoiser evaluations per image."""

from __future__ import annotations

import functools
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from auggen.generator import build_unet, set_backend
from auggen.recognition import build_backbone


def forward_flops(module: torch.nn.Module, *inputs) -> float:
    """FLOPs of one forward of ``module`` on ``inputs``, by torch's flop counter."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return float(counter.get_total_flops())


def configured_unet(cfg, classes: int):
    """G as ``cfg.gen`` builds it (freshly initialised, default backend)."""
    g = cfg.gen
    kw = dict(g.overrides)
    if g.dropout is not None:
        kw["dropout"] = g.dropout
    return build_unet(g.preset, g.resolution, classes, **kw)


def generator_cost(cfg, classes: int) -> tuple[float, int]:
    """(FLOPs of one denoiser evaluation per image, parameters) of the configured G, counted
    once per network (``--plan`` and its calibration ask several times)."""
    g = cfg.gen
    key = json.dumps([g.preset, g.resolution, classes, g.overrides, g.dropout], sort_keys=True)
    if key not in _G_COSTS:
        _G_COSTS[key] = _generator_cost(cfg, classes)
    return _G_COSTS[key]


_G_COSTS: dict[str, tuple[float, int]] = {}  # the network's description -> its cost


def _generator_cost(cfg, classes: int) -> tuple[float, int]:
    net = configured_unet(cfg, classes).eval()
    set_backend(net, "reference")  # plain torch ops, which the flop counter knows
    r = cfg.gen.resolution
    x = torch.zeros(1, net.img_channels, r, r)
    labels = torch.zeros(1, classes) if classes else None
    flops = forward_flops(net, x, torch.ones(1), labels)
    return flops, sum(p.numel() for p in net.parameters())


def recogniser_cost(cfg, classes: int) -> tuple[float, float, int]:
    """(backbone FLOPs per image, head FLOPs per image, backbone parameters) of the FR net."""
    f = cfg.fr
    flops, params = _backbone_cost(f.backbone, f.input_size, f.embedding_size, f.width)
    head = 2.0 * f.embedding_size * classes * f.partial_fc_rate  # cosine logits
    return flops, head, params


@functools.lru_cache(maxsize=16)
def _backbone_cost(backbone: str, input_size: int, embedding_size: int, width) -> tuple:
    net = build_backbone(backbone, input_size, embedding_size, width=width).eval()
    flops = forward_flops(net, torch.zeros(1, 3, input_size, input_size))
    return flops, sum(p.numel() for p in net.parameters())


def denoiser_evals(cfg) -> int:
    """Denoiser evaluations per sampled image (Heun: 2 per step but the last; guidance x2)."""
    s = cfg.sample
    n = 2 * s.num_steps - 1 if s.solver == "heun" else s.num_steps
    return n * (2 if s.guidance != 1.0 else 1)  # guidance runs a second network


def rows_per_image(cfg) -> int:
    """Network rows one D_aug image costs: ``denoiser_evals``, x k sources with score mixing
    (one call on k conditions per image)."""
    g = cfg.generate
    return denoiser_evals(cfg) * (g.sources if g.mix == "score" else 1)


def human(x: float, unit: str = "") -> str:
    """``x`` with an SI prefix and 3 significant digits (1.23e9 -> '1.23 G')."""
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g} {suffix}{unit}"
    return f"{x:.3g} {unit}".strip()
