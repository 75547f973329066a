"""Stage ``repro``: D_repro, G's reproductions of the original identities (one-hot c_i).

The same labels as D_orig, so D_orig + D_repro adds images, not identities: the control
that tells whether D_aug helps through its new identities or just through more images.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from auggen.data.types import LabeledImages
from auggen.mixing.conditions import one_hot
from auggen.pipeline.faults import fault_point
from auggen.pipeline.stages.common import load_gen, sampler
from auggen.pipeline.store import concat, load, load_images, save_images


def run(cfg, in_dirs, out_dir) -> None:
    real = load_images(in_dirs["data"] / "train.safetensors")
    net = load_gen(in_dirs, cfg.device)
    sample_fn = sampler(net, cfg)
    k, n = cfg.repro.images_per_identity, real.num_classes
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(exist_ok=True)
    chunk = max(1, cfg.sample.batch_size // k)  # identities per sampler call (and per part)
    parts = []
    for p, lo in enumerate(tqdm(range(0, n, chunk), desc="repro", disable=not cfg.progress)):
        path = parts_dir / f"part{p:05d}.safetensors"
        if not path.exists():
            classes = torch.arange(lo, min(lo + chunk, n)).repeat_interleave(k)
            seeds = cfg.repro.seed * 1_000_000 + classes * k + torch.arange(len(classes)) % k
            images = sample_fn(one_hot(classes, net.label_dim), seeds)
            names = [f"repro/{int(c)}/{int(s)}" for c, s in zip(classes, seeds)]
            save_images(LabeledImages(images, classes, names, n), path)
            fault_point("repro", p)
        parts.append(load(path))
    data = concat([LabeledImages(d["images"], d["labels"], d["names"], n) for d in parts], n)
    save_images(data, out_dir / "repro.safetensors")
