"""Stage ``repro``: D_repro, G's reproductions of the original identities (one-hot c_i).

The same labels as D_orig, so D_orig + D_repro adds images, not identities: the control
that tells whether D_aug helps through its new identities or just through more images.
Written as RecordIO shards (``parts/partNNNNN.rec``, one per sampler call, resumable) and the
view over them, ``repro.index.json``.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from auggen.mixing.conditions import one_hot
from auggen.pipeline.faults import fault_point
from auggen.pipeline.stages.common import load_gen, open_data, sampler
from auggen.pipeline.stages.shards import index_shards, shard_done, write_shard


def run(cfg, in_dirs, out_dir) -> None:
    n = open_data(in_dirs).num_classes
    net = load_gen(in_dirs, cfg.device)
    sample_fn = sampler(net, cfg)
    k = cfg.repro.images_per_identity
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(exist_ok=True)
    chunk = max(1, cfg.sample.batch_size // k)  # identities per sampler call (and per part)
    prefixes = []
    for p, lo in enumerate(tqdm(range(0, n, chunk), desc="repro", disable=not cfg.progress)):
        prefix = parts_dir / f"part{p:05d}"
        prefixes.append(prefix)
        if shard_done(prefix):
            continue
        classes = torch.arange(lo, min(lo + chunk, n)).repeat_interleave(k)
        seeds = cfg.repro.seed * 1_000_000 + classes * k + torch.arange(len(classes)) % k
        images = sample_fn(one_hot(classes, net.label_dim), seeds)
        write_shard(prefix, images, classes, n, {"seeds": seeds.tolist()})
        fault_point("repro", p)
    index_shards(prefixes, n, cfg.gen.resolution, out_dir / "repro.index.json")
