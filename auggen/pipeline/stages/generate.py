"""Stage ``generate``: D_aug, N_new new identities from ``alpha* c_i + beta* c_j``.

Identity n (label N_orig + n) mixes a random pair of distinct classes (i, j) as
``alpha* c_i + beta* c_j`` (or, with ``generate.sources`` = k >= 3, k classes with Dirichlet
weights scaled to alpha* + beta*); its K images use seeds ``seed * 10^6 + n K + k``. Work is
sharded by identity: ``shards/shardNNNNN.rec`` (insightface RecordIO, PNG records) + ``.json``
(its manifest rows, written last), so a killed run resumes at the first unfinished shard and
reproduces the same images. Under torchrun shard s goes to rank s mod K; the shards are the
same for any K. Then, on rank 0: ``aug.index.json`` (the view over the shards that
``train_mix`` reads), ``manifest.csv``, optionally PNG copies under ``images/``
(``generate.write_images``) and one merged ``aug.rec`` (``generate.write_recordio``), and the
leakage audit (``leakage.csv``, ``leakage.json``, ``leakage.png``).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from auggen import runtime
from auggen.faults import fault_point
from auggen.files import read_json
from auggen.mixing import sample_pairs
from auggen.pipeline.leakage import leakage_audit
from auggen.pipeline.pretrained import m_orig
from auggen.pipeline.stage import write_json
from auggen.pipeline.stages.common import (
    embedder,
    load_gen,
    open_data,
    sampler,
)
from auggen.pipeline.stages.shards import export_png, index_shards, shard_done, write_shard
from auggen.pipeline.store import write_csv


def mixing_weights(cfg, in_dirs) -> tuple[float, float, str]:
    g = cfg.generate
    if g.alpha is not None:
        return g.alpha, g.beta, "generate.alpha/beta (config)"
    best = read_json(in_dirs["grid"] / "best.json")
    return best["alpha"], best["beta"], "grid search best.json"


def identity_sources(g, n_orig: int, alpha: float, beta: float):
    """(sources (N, k) int64, weights (N, k)) of the N new identities.

    k = 2 (the paper): a random pair (i, j) with weights (alpha*, beta*). k >= 3
    (``generate.sources``, beyond the paper): k distinct random classes whose weights are
    Dirichlet(``generate.concentration``) scaled to alpha* + beta*, so the condition keeps
    the mass of the chosen grid cell. One condition per identity, shared by its K images.
    """
    if g.sources == 2:
        pairs = sample_pairs(n_orig, g.new_identities, seed=g.seed)
        return pairs, torch.tensor([[alpha, beta]]).expand(len(pairs), 2)
    if g.sources > n_orig:
        raise ValueError(f"generate.sources={g.sources} exceeds the {n_orig} original identities")
    rng = np.random.default_rng(g.seed)
    picks = [rng.choice(n_orig, size=g.sources, replace=False) for _ in range(g.new_identities)]
    w = rng.dirichlet([g.concentration] * g.sources, size=g.new_identities)
    return torch.from_numpy(np.stack(picks)).long(), torch.from_numpy(w).float() * (alpha + beta)


def identity_conditions(sources, weights, label_dim: int) -> torch.Tensor:
    """(N, label_dim) condition vectors: ``sum_m weights[n, m] * onehot(sources[n, m])``."""
    cond = torch.zeros(len(sources), label_dim)
    return cond.scatter_add_(1, sources, weights.float())


def image_names(manifest: list[dict], num_classes: int) -> list[str]:
    """PNG paths inside the stage folder: ``images/<label>/<counter>.png``."""
    width = max(5, len(str(num_classes - 1)))
    counters: dict[int, int] = {}
    out = []
    for r in manifest:
        c = counters.get(r["label"], 0)
        counters[r["label"]] = c + 1
        out.append(f"images/{r['label']:0{width}d}/{c:06d}.png")
    return out


def run(cfg, in_dirs, out_dir) -> None:
    g = cfg.generate
    real = open_data(in_dirs)
    n_orig = real.num_classes
    total = n_orig + g.new_identities
    alpha, beta, origin = mixing_weights(cfg, in_dirs)
    net = load_gen(in_dirs, cfg.device)
    sample_fn = sampler(net, cfg)
    sources, weights = identity_sources(g, n_orig, alpha, beta)
    cond_of = identity_conditions(sources, weights, net.label_dim)
    k, per = g.images_per_identity, g.shard_identities
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(exist_ok=True)
    n_shards = -(-g.new_identities // per)
    prefixes = [shard_dir / f"shard{s:05d}" for s in range(n_shards)]
    todo = [s for s in runtime.my_items(range(n_shards)) if not shard_done(prefixes[s])]
    for s in tqdm(todo, desc="generate (shards)", disable=not cfg.progress):
        ids = torch.arange(s * per, min((s + 1) * per, g.new_identities))
        rows = ids.repeat_interleave(k)
        cond = cond_of[rows]
        seeds = g.seed * 1_000_000 + rows * k + torch.arange(len(rows)) % k
        t0 = time.perf_counter()
        images = sample_fn(cond, seeds)
        sample_s = time.perf_counter() - t0
        manifest = [
            {
                "label": n_orig + int(n),
                "new_identity": int(n),
                "source_i": int(sources[n, 0]),
                "source_j": int(sources[n, 1]),
                "sources": ";".join(str(int(c)) for c in sources[n]),
                "weights": ";".join(f"{float(w):.6g}" for w in weights[n]),
                "alpha": alpha,
                "beta": beta,
                "seed": int(sd),
                "record": f"shards/{prefixes[s].name}.rec:{key}",
            }
            for key, (n, sd) in enumerate(zip(rows, seeds), start=1)
        ]
        names = image_names(manifest, total)
        for r, name in zip(manifest, names):
            r["file"] = name if g.write_images else r["record"]
        if g.write_images:
            export_png(out_dir, images, n_orig + rows, names)
        write_shard(
            prefixes[s], images, n_orig + rows, total, {"manifest": manifest, "sample_s": sample_s}
        )
        fault_point("generate", s)
    runtime.barrier("generate: every rank's shards written")
    if runtime.current().is_main:  # the rest reads all shards once: rank 0 alone
        _finish(cfg, in_dirs, out_dir, prefixes, total, n_orig, alpha, beta, origin)


def _finish(cfg, in_dirs, out_dir, prefixes, total, n_orig, alpha, beta, origin) -> None:
    """The view over the shards, the manifest, exports and the leakage audit."""
    g, k = cfg.generate, cfg.generate.images_per_identity
    real = open_data(in_dirs)
    aug, sidecars = index_shards(prefixes, total, cfg.gen.resolution, out_dir / "aug.index.json")
    manifest = [r for sc in sidecars for r in sc["manifest"]]
    write_csv(out_dir / "manifest.csv", manifest)
    write_json(
        out_dir / "mixing.json",
        {
            "alpha": alpha,
            "beta": beta,
            "from": origin,
            "original_identities": n_orig,
            "new_identities": g.new_identities,
            "label_offset": n_orig,
            "images_per_identity": k,
        },
    )
    sample_s = sum(sc.get("sample_s", 0.0) for sc in sidecars)
    write_json(
        out_dir / "stats.json",
        {
            "images": len(aug),
            "sample_s": sample_s,
            "images_per_s": len(aug) / sample_s if sample_s > 0 else None,
            "sampler_steps": cfg.sample.num_steps,
            "solver": cfg.sample.solver,
        },
    )
    _export(prefixes, out_dir, g)
    embed = embedder(m_orig(cfg, in_dirs), cfg)
    heldout_path = in_dirs["data"] / "heldout.index.json"
    heldout = open_data(in_dirs, "heldout") if heldout_path.exists() else None
    leakage_audit(  # streamed: real embeddings are held, never the real images
        embed,
        aug,
        manifest,
        real,
        out_dir,
        g.leakage_threshold,
        heldout,
        batch_size=cfg.embed.batch_size,
        num_workers=cfg.data.workers,
    )


def _export(prefixes, out_dir, g) -> None:
    """User-facing extras: one merged RecordIO (``aug.rec``) when asked."""
    from auggen.data.recordio import merge_recordio

    notes = {"shards": "shards/shard*.rec (+ .idx)", "index": "aug.index.json"}
    if g.write_images:
        notes["images"] = "images/"
    if g.write_recordio:
        merge_recordio([p.with_suffix(".rec") for p in prefixes], out_dir / "aug")
        notes["recordio"] = "aug.rec / aug.idx"
    write_json(out_dir / "exports.json", notes)
