"""Stage ``generate``: D_aug, N_new new identities from ``alpha* c_i + beta* c_j``.

Identity n (label N_orig + n) mixes a random pair of distinct classes (i, j) as
``alpha* c_i + beta* c_j`` (or, with ``generate.sources`` = k >= 3, k classes with Dirichlet
weights scaled to alpha* + beta*); its K images use seeds ``seed * 10^6 + n K + k``. Beyond
the paper, ``generate.mix=score`` mixes the denoiser outputs of the one-hot sources instead
(ScoreMix, convex weights), and ``generate.pairs`` picks far / near sources by M_orig's
class centroids or G's label embeddings (``auggen.mixing.choice``); ``pairs.json`` holds the
Spearman correlation of the two distances over class pairs, ``pair_distances.png`` the
distances of the pairs used. Work is
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

import torch
from tqdm.auto import tqdm

from auggen.analysis.figures import pyplot, save_figure
from auggen.analysis.leakage import leakage_audit
from auggen.data.recordio import merge_recordio
from auggen.eval.embeddings import embed_source
from auggen.infra import runtime
from auggen.infra.faults import fault_point
from auggen.infra.files import read_json
from auggen.mixing.choice import (
    cap_of,
    identity_conditions,
    identity_sources,
    score_conditions,
)
from auggen.mixing.pairs import (
    class_pairs,
    distance_correlation,
    group_distance,
    pair_distances,
)
from auggen.mixing.search import class_centroids, l2_normalize
from auggen.pipeline.cost import rows_per_image
from auggen.pipeline.stage import write_json
from auggen.pipeline.stages.common import (
    embedder,
    load_gen,
    m_orig,
    open_data,
    sampler,
)
from auggen.pipeline.stages.shards import export_png, index_shards, shard_done, write_shard
from auggen.pipeline.store import write_csv

__all__ = ["identity_conditions", "identity_sources", "run"]


def mixing_weights(cfg, in_dirs) -> tuple[float | None, float | None, str]:
    g = cfg.generate
    if g.mix == "score":
        return None, None, "score mixing: convex weights, no (alpha, beta)"
    if g.alpha is not None:
        return g.alpha, g.beta, "generate.alpha/beta (config)"
    best = read_json(in_dirs["grid"] / "best.json")
    return best["alpha"], best["beta"], "grid search best.json"


def condition_embeddings(net) -> torch.Tensor:
    """(label_dim, C) G's learned class embeddings: the columns of its label layer's weight
    as the network applies it (normalised per output channel, EDM2 Eq. 46-47)."""
    layer = net.unet.emb_label
    return layer.inference_weight(torch.float32).detach().reshape(layer.out_channels, -1).T.cpu()


def class_vectors(cfg, in_dirs, real, net, device):
    """(unit class vectors, D_orig's embeddings): M_orig's centroids of its flip-fused unit
    embeddings of D_orig (``embed``) and G's label embeddings (``cond``), and those (N, D)
    embeddings themselves, which the leakage audit reuses. Every rank takes part in the
    embedding; M_orig is loaded on ``device`` for this alone and freed before sampling."""
    embed = embedder(m_orig(cfg, in_dirs, device), cfg, device)
    feats = embed_source(embed, real, cfg.embed.batch_size, split=True)
    vectors = {
        "embed": class_centroids(feats, real.labels, real.num_classes),
        "cond": l2_normalize(condition_embeddings(net)[: real.num_classes]),
    }
    return vectors, feats


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


def run(cfg, in_dirs, out_dir, rt: runtime.Runtime) -> None:
    g = cfg.generate
    real = open_data(in_dirs)
    n_orig = real.num_classes
    total = n_orig + g.new_identities
    alpha, beta, origin = mixing_weights(cfg, in_dirs)
    net = load_gen(in_dirs, rt.device)
    sample_fn = sampler(net, cfg, rt, sources=g.sources if g.mix == "score" else 1)
    vectors, real_feats = class_vectors(cfg, in_dirs, real, net, rt.device)
    real_feats = real_feats if rt.is_main else None  # rank 0 alone runs the audit
    feats = vectors["cond" if g.pairs.startswith("cond-") else "embed"]
    sources, weights = identity_sources(g, n_orig, alpha, beta, feats)
    dist = {n: group_distance(v, sources) for n, v in vectors.items()}
    k, per = g.images_per_identity, g.shard_identities
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(exist_ok=True)
    n_shards = -(-g.new_identities // per)
    prefixes = [shard_dir / f"shard{s:05d}" for s in range(n_shards)]
    todo = [s for s in runtime.my_items(range(n_shards), rt) if not shard_done(prefixes[s])]
    for s in tqdm(todo, desc="generate (shards)", disable=not cfg.progress):
        ids = torch.arange(s * per, min((s + 1) * per, g.new_identities))
        rows = ids.repeat_interleave(k)
        if g.mix == "score":  # built per shard: (rows, k, label_dim) is large at 10 k classes
            cond = score_conditions(sources[rows], net.label_dim)
        else:
            cond = identity_conditions(sources[rows], weights[rows], net.label_dim)
        seeds = g.seed * 1_000_000 + rows * k + torch.arange(len(rows)) % k
        t0 = time.perf_counter()
        images = sample_fn(cond, seeds, weights[rows] if g.mix == "score" else None)
        sample_s = time.perf_counter() - t0
        manifest = [
            {
                "label": n_orig + int(n),
                "new_identity": int(n),
                "source_i": int(sources[n, 0]),
                "source_j": int(sources[n, 1]),
                "sources": ";".join(str(int(c)) for c in sources[n]),
                "weights": ";".join(f"{float(w):.6g}" for w in weights[n]),
                "alpha": alpha if alpha is not None else "",
                "beta": beta if beta is not None else "",
                "mix": g.mix,
                "pairs": g.pairs,
                "embed_distance": round(float(dist["embed"][n]), 6),
                "cond_distance": round(float(dist["cond"][n]), 6),
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
    runtime.barrier("generate: every rank's shards written", rt)
    if rt.is_main:  # the rest reads all shards once: rank 0 alone
        mix = {"weights": weights, "dist": dist, "vectors": vectors, "real_feats": real_feats}
        _finish(cfg, in_dirs, out_dir, prefixes, total, n_orig, (alpha, beta, origin), mix, rt)


def _finish(cfg, in_dirs, out_dir, prefixes, total, n_orig, chosen, mix, rt) -> None:
    """The view over the shards, the manifest, exports and the leakage audit (M_orig on
    ``rt.device``, D_orig's embeddings ``mix["real_feats"]`` from the class vectors);
    ``chosen``: (alpha, beta, where they came from)."""
    alpha, beta, origin = chosen
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
            "mix": g.mix,
            "pairs": g.pairs,
            "sources": g.sources,
            # mix=score: each identity's convex weights (one row when all share them)
            "weights": _weights_summary(mix["weights"]) if g.mix == "score" else None,
        },
    )
    _pair_outputs(out_dir, g, mix)
    sample_s = sum(sc.get("sample_s", 0.0) for sc in sidecars)
    write_json(
        out_dir / "stats.json",
        {
            "images": len(aug),
            "sample_s": sample_s,
            "images_per_s": len(aug) / sample_s if sample_s > 0 else None,
            "sampler_steps": cfg.sample.num_steps,
            "solver": cfg.sample.solver,
            "denoiser_evaluations": len(aug) * rows_per_image(cfg),
        },
    )
    _export(prefixes, out_dir, g)
    embed = embedder(m_orig(cfg, in_dirs, rt.device), cfg, rt.device)
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
        real_feats=mix["real_feats"],
    )


def _weights_summary(w: torch.Tensor) -> list:
    rows = [[round(float(v), 6) for v in r] for r in w]
    return rows[0] if all(r == rows[0] for r in rows) else rows


def _pair_outputs(out_dir, g, mix) -> None:
    """pairs.json (rule, cap, distances used, Spearman rho over all class pairs) and the
    histogram of the distances of the pairs used."""
    vec, dist = mix["vectors"], mix["dist"]
    corr = distance_correlation(vec["embed"], vec["cond"])
    summary = {
        "rule": g.pairs,
        "max_uses_per_identity": cap_of(g, len(vec["embed"])) if g.pairs != "random" else None,
        **{
            f"{name}_distance": {
                "mean": float(d.mean()),
                "min": float(d.min()),
                "max": float(d.max()),
            }
            for name, d in dist.items()
        },
        "embed_vs_cond": corr,
    }
    write_json(out_dir / "pairs.json", summary)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, name, label in zip(
        axes, ("embed", "cond"), ("M_orig centroids", "G's class embeddings")
    ):
        every = pair_distances(vec[name], *class_pairs(len(vec[name])))
        ax.hist(every.numpy(), bins=40, density=True, alpha=0.5, label="all class pairs")
        ax.hist(dist[name].numpy(), bins=20, density=True, alpha=0.7, label=f"used ({g.pairs})")
        ax.set_xlabel(f"cosine distance, {label}")
        ax.legend(fontsize=7)
    fig.suptitle(f"Source distances of D_aug; Spearman rho = {corr['spearman_rho']:.2f}")
    fig.tight_layout()
    save_figure(fig, out_dir / "pair_distances.png", dpi=100)
    plt.close(fig)


def _export(prefixes, out_dir, g) -> None:
    """User-facing extras: one merged RecordIO (``aug.rec``) when asked."""

    notes = {"shards": "shards/shard*.rec (+ .idx)", "index": "aug.index.json"}
    if g.write_images:
        notes["images"] = "images/"
    if g.write_recordio:
        merge_recordio([p.with_suffix(".rec") for p in prefixes], out_dir / "aug")
        notes["recordio"] = "aug.rec / aug.idx"
    write_json(out_dir / "exports.json", notes)
