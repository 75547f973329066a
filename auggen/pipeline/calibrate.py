"""``--plan`` on this machine: a few-second calibration that turns the plan's FLOPs into minutes.

Measurements at the run's shapes (resolution, channels, input size, class count), on this
machine's threads (``--threads``): one generator training step (EDM2 loss, backward, Adam),
one FR training step (backbone + margin head, cross-entropy, backward, SGD), one sampler call
(one denoiser evaluation, no grad, the sampler's precision) and one embedding call (backbone
forward). Each batch size is run once untimed, then timed; the batch doubles (from 1, or 2
for BatchNorm) up to the run's until a call takes ``TARGET_S``; a first call longer than
``LONG_S`` is taken as the measurement. Small networks calibrate in seconds; paper-sized ones
cost one call each (on a 2-core CPU, casia-ir50's 112 px generator step is the long one). A
smaller batch than the run's makes the estimate err long. Each
measurement gives an effective FLOP/s (the plan's FLOP count for that call / its seconds), by
which the plan divides each stage's FLOPs of that kind. The machine's load at that moment is
in the figure: another busy process makes the minutes longer, as it would make the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from auggen.generator.train import edm2_loss
from auggen.infra.runtime import use_bf16
from auggen.pipeline.cost import configured_unet, generator_cost, recogniser_cost
from auggen.recognition import build_backbone
from auggen.recognition.heads import build_head
from auggen.recognition.iresnet import memory_format_for
from auggen.recognition.train import FRModel

TARGET_S = 0.5  # a timed call this long (or at the run's batch) ends a measurement
LONG_S = 4.0  # a first call this long is the measurement (no second call)


@dataclass(frozen=True)
class Calibration:
    device: str  # what was measured, in words (e.g. "cpu, 2 threads")
    rates: dict  # kind -> effective FLOP/s: gen_step, fr_step, sample, embed
    seconds: float  # wall time the calibration took

    def seconds_for(self, kind: str, flops: float) -> float:
        return flops / self.rates[kind] if flops else 0.0


def _rate(make_call, flops_per_image: float, max_batch: int, sync=None, start: int = 2) -> float:
    """Effective FLOP/s of ``make_call(b)()``: each batch size is run once untimed (allocator,
    oneDNN primitives, weight caches), then timed; the batch doubles up to ``max_batch``
    until a call takes ``TARGET_S``, so fixed per-call costs amortise as in the run."""
    b = max(1, min(start, max_batch))
    while True:
        call = make_call(b)
        t0 = time.perf_counter()
        call()
        sync()
        first = time.perf_counter() - t0
        if first >= LONG_S:  # a paper-sized network: set-up is a small part of one call
            return flops_per_image * b / first
        t0 = time.perf_counter()
        call()
        sync()
        seconds = time.perf_counter() - t0
        if seconds >= TARGET_S or b >= max_batch:
            return flops_per_image * b / seconds
        b = min(2 * b, max_batch)


def calibrate(cfg, classes: int, device: str = "cpu", threads: int = 0) -> Calibration:
    """Measure this machine's effective FLOP/s for the three kinds of work a run does."""
    t_start = time.perf_counter()
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    try:
        classes = max(int(classes), 1)
        rates = _generator_rates(cfg, classes, dev, device, sync)
        rates.update(_fr_rates(cfg, classes, dev, sync))
    finally:
        torch.set_num_threads(before)
    n = threads or before
    what = f"{device}, {n} thread{'s' * (n != 1)}, at its load now"
    if dev.type == "cuda":
        what = f"{device} ({torch.cuda.get_device_name(dev)})"
    return Calibration(what, rates, time.perf_counter() - t_start)


def _generator_rates(cfg, classes: int, dev: torch.device, device: str, sync) -> dict:
    """gen_step (EDM2 loss, backward, Adam) and sample (one denoiser call, no grad)."""

    g = cfg.gen
    torch.manual_seed(0)
    net = configured_unet(cfg, classes).to(dev)
    c, r = net.img_channels, g.resolution
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def gen_call(b: int):
        def step():
            y = torch.randn(b, c, r, r, device=dev)
            labels = F.one_hot(torch.arange(b, device=dev) % classes, classes).float()
            sigma = torch.full((b, 1, 1, 1), 1.0, device=dev)
            loss = edm2_loss(net, y, labels, sigma, torch.randn_like(y), g.sigma_data)
            opt.zero_grad(set_to_none=True)
            loss.mean().backward()
            opt.step()

        return step

    rates = {}
    g_flops = generator_cost(cfg, classes)[0]
    rates["gen_step"] = _rate(gen_call, 3 * g_flops, g.batch_size, sync, start=1)

    net.eval()
    bf16 = use_bf16(cfg.sample.precision, device)

    def sample_call(b: int):
        def call():
            x = torch.randn(b, c, r, r, device=dev)
            labels = F.one_hot(torch.arange(b, device=dev) % classes, classes).float()
            with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
                net(x, torch.full((b,), 2.0, device=dev), labels)

        return call

    rates["sample"] = _rate(sample_call, g_flops, cfg.sample.batch_size or 256, sync, 1)
    return rates


def _fr_rates(cfg, classes: int, dev: torch.device, sync) -> dict:
    """fr_step (backbone + margin head, cross-entropy, backward, SGD) and embed (forward)."""

    f = cfg.fr
    backbone = build_backbone(f.backbone, f.input_size, f.embedding_size, width=f.width)
    f_flops, head_flops, _ = recogniser_cost(cfg, classes)
    head = build_head(f.head, f.embedding_size, classes, **f.head_kwargs)
    model = FRModel(backbone, head).to(dev).train()
    fmt, _ = memory_format_for(model, dev, f.channels_last)
    model = model.to(memory_format=fmt)
    fopt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def fr_call(b: int):
        def step():
            x = torch.randn(b, 3, f.input_size, f.input_size, device=dev)
            y = torch.arange(b, device=dev) % classes
            loss = F.cross_entropy(model(x.contiguous(memory_format=fmt), y), y)
            fopt.zero_grad(set_to_none=True)
            loss.backward()
            fopt.step()

        return step

    rates = {"fr_step": _rate(fr_call, 3 * (f_flops + head_flops), f.batch_size, sync)}
    # Embedding (grid, generate, evaluate): a backbone forward, no grad.
    model.eval()

    def embed_call(b: int):
        def call():
            x = torch.randn(b, 3, f.input_size, f.input_size, device=dev)
            with torch.no_grad():
                backbone(x.contiguous(memory_format=fmt))

        return call

    rates["embed"] = _rate(embed_call, f_flops, cfg.embed.batch_size, sync)
    return rates


# Which calibrated kind each stage's FLOPs are priced at: (kind, FLOP source) pairs.
STAGE_KINDS = {
    "train_gen": (("gen_step", "flops"),),
    "train_fr": (("fr_step", "flops"),),
    "train_mix": (("fr_step", "flops"),),
    "repro": (("sample", "sample_flops"), ("embed", "embed_flops")),
    "grid": (("sample", "sample_flops"), ("embed", "embed_flops")),
    "generate": (("sample", "sample_flops"), ("embed", "embed_flops")),
    "evaluate": (("embed", "flops"),),
}


def stage_minutes(row: dict, cal: Calibration) -> float | None:
    """Minutes of ``row`` (a ``plan.stage_work`` row) on the calibrated machine; None for
    stages that are not FLOP-bound (data: decoding, report: figures)."""
    kinds = STAGE_KINDS.get(row["stage"])
    if kinds is None:
        return None
    return sum(cal.seconds_for(k, row.get(src, 0.0)) for k, src in kinds) / 60
