"""Stage ``repro``: D_repro, G's reproductions of the original identities (one-hot c_i).

The same labels as D_orig, so D_orig + D_repro adds images, not identities: the control
that tells whether D_aug helps through its new identities or just through more images.
Written as RecordIO shards (``parts/partNNNNN.rec``, ``repro.shard_identities`` identities
each: the unit of resume and of work split, part p going to rank p mod K under torchrun)
and the view over them, ``repro.index.json``, written by rank 0 once every part is done.
Every image has its own seed, so the parts are the same for any number of processes.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from auggen.infra import runtime
from auggen.infra.faults import fault_point
from auggen.mixing.conditions import one_hot
from auggen.pipeline.stages.common import load_gen, open_data, sampler
from auggen.pipeline.stages.shards import index_shards, shard_done, write_shard


def run(cfg, in_dirs, out_dir, rt: runtime.Runtime) -> None:
    n = open_data(in_dirs).num_classes
    net = load_gen(in_dirs, rt.device)
    sample_fn = sampler(net, cfg, rt)
    k, per = cfg.repro.images_per_identity, cfg.repro.shard_identities
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(exist_ok=True)
    prefixes = [parts_dir / f"part{p:05d}" for p in range(-(-n // per))]
    todo = [p for p in runtime.my_items(range(len(prefixes)), rt) if not shard_done(prefixes[p])]
    for p in tqdm(todo, desc="repro (parts)", disable=not cfg.progress):
        prefix = prefixes[p]
        classes = torch.arange(p * per, min((p + 1) * per, n)).repeat_interleave(k)
        seeds = cfg.repro.seed * 1_000_000 + classes * k + torch.arange(len(classes)) % k
        images = sample_fn(one_hot(classes, net.label_dim), seeds)
        write_shard(prefix, images, classes, n, {"seeds": seeds.tolist()})
        fault_point("repro", p)
    runtime.barrier("repro: every rank's parts written", rt)
    if rt.is_main:
        index_shards(prefixes, n, cfg.gen.resolution, out_dir / "repro.index.json")
