"""Stage ``generate``: D_aug, N_new new identities from ``alpha* c_i + beta* c_j``.

Identity n (label N_orig + n) mixes a random pair of distinct classes (i, j); its K images
use seeds ``seed * 10^6 + n K + k``. Work is sharded by identity (``shards/shardNNNNN.safetensors``,
atomic), so a killed run resumes at the first missing shard and reproduces the same images.
Then: ``aug.safetensors``, ``manifest.csv``, the image folder ``images/`` (and RecordIO when asked),
and the leakage audit (``leakage.csv``, ``leakage.json``, ``leakage.png``).
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from auggen.data.types import LabeledImages
from auggen.files import read_json
from auggen.mixing import mix_conditions, sample_pairs
from auggen.pipeline.faults import fault_point
from auggen.pipeline.leakage import leakage_audit
from auggen.pipeline.stage import write_json
from auggen.pipeline.stages.common import embedder, load_fr, load_gen, m_orig_dir, sampler
from auggen.pipeline.store import (
    concat,
    load,
    load_images,
    save_atomic,
    save_images,
    write_csv,
)


def mixing_weights(cfg, in_dirs) -> tuple[float, float, str]:
    g = cfg.generate
    if g.alpha is not None:
        return g.alpha, g.beta, "generate.alpha/beta (config)"
    best = read_json(in_dirs["grid"] / "best.json")
    return best["alpha"], best["beta"], "grid search best.json"


def image_names(manifest: list[dict], num_classes: int) -> list[str]:
    """Paths inside the stage folder, as ``write_image_folder`` names them (label, counter)."""
    width = max(5, len(str(num_classes - 1)))
    counters: dict[int, int] = {}
    out = []
    for r in manifest:
        k = counters.get(r["label"], 0)
        counters[r["label"]] = k + 1
        out.append(f"images/{r['label']:0{width}d}/{k:06d}.png")
    return out


def run(cfg, in_dirs, out_dir) -> None:
    g = cfg.generate
    real = load_images(in_dirs["data"] / "train.safetensors")
    n_orig = real.num_classes
    alpha, beta, origin = mixing_weights(cfg, in_dirs)
    net = load_gen(in_dirs, cfg.device)
    sample_fn = sampler(net, cfg)
    pairs = sample_pairs(n_orig, g.new_identities, seed=g.seed)
    k, per = g.images_per_identity, g.shard_identities
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(exist_ok=True)
    n_shards = -(-g.new_identities // per)
    for s in tqdm(range(n_shards), desc="generate (shards)", disable=not cfg.progress):
        path = shard_dir / f"shard{s:05d}.safetensors"
        if path.exists():
            continue
        ids = torch.arange(s * per, min((s + 1) * per, g.new_identities))
        rows = ids.repeat_interleave(k)
        cond = mix_conditions(pairs[rows, 0], pairs[rows, 1], alpha, beta, net.label_dim)
        seeds = g.seed * 1_000_000 + rows * k + torch.arange(len(rows)) % k
        t0 = time.perf_counter()
        images = sample_fn(cond, seeds)
        sample_s = time.perf_counter() - t0
        manifest = [
            {
                "label": n_orig + int(n),
                "new_identity": int(n),
                "source_i": int(pairs[n, 0]),
                "source_j": int(pairs[n, 1]),
                "alpha": alpha,
                "beta": beta,
                "seed": int(sd),
            }
            for n, sd in zip(rows, seeds)
        ]
        save_atomic(
            {"images": images, "labels": n_orig + rows, "manifest": manifest, "sample_s": sample_s},
            path,
        )
        fault_point("generate", s)
    shards = [load(shard_dir / f"shard{s:05d}.safetensors") for s in range(n_shards)]
    total = n_orig + g.new_identities
    manifest = [r for sh in shards for r in sh["manifest"]]
    for r, name in zip(manifest, image_names(manifest, total)):
        r["file"] = name
    aug = concat([LabeledImages(sh["images"], sh["labels"], [], total) for sh in shards], total)
    aug.names = [r["file"] for r in manifest]
    save_images(aug, out_dir / "aug.safetensors")
    write_csv(out_dir / "manifest.csv", manifest)
    write_json(
        out_dir / "mixing.json",
        {
            "alpha": alpha,
            "beta": beta,
            "from": origin,
            "original_identities": n_orig,
            "new_identities": g.new_identities,
            "images_per_identity": k,
        },
    )
    sample_s = sum(sh.get("sample_s", 0.0) for sh in shards)
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
    _export(aug, out_dir, g)
    embed = embedder(load_fr(m_orig_dir(cfg, in_dirs), cfg.device), cfg)
    heldout_path = in_dirs["data"] / "bench_heldout_ident.safetensors"
    heldout = load(heldout_path)["probe"] if heldout_path.exists() else None
    leakage_audit(embed, aug, manifest, real, out_dir, g.leakage_threshold, heldout)


def _export(aug: LabeledImages, out_dir, g) -> None:
    """The user-facing copies of D_aug: PNG folder and optionally RecordIO."""
    import auggen.data as data

    notes = {}
    if g.write_images:
        data.write_image_folder(out_dir / "images", aug)
        notes["images"] = "images/"
    if g.write_recordio:
        data.write_recordio(out_dir / "aug", aug)
        notes["recordio"] = "aug.rec / aug.idx"
    write_json(out_dir / "exports.json", notes)
