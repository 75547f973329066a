"""Does AugGen help here? Vary one factor at a time from the ``orl-tiny`` base and measure.

Fixed before the study (never tuned on the evaluation identities): the ORL split of the
``orl-tiny`` preset (30 training identities, 10 unseen ones for verification, 2 held-out
images per training identity for rank-1), FR seeds 0-4 in every arm (0-19 in ``seeds-20``),
and the primary metric, unseen-identity verification accuracy (insightface's 10-fold
protocol). The generator is trained once per generator config, not per FR seed: the seeds
measure the FR training noise around one G.

Each arm is a pipeline run in ``<out>/<arm>``; it starts from hard links to the finished
stage folders of ``<out>/base`` (``ARM_BASE``: the ScoreMix comparison starts from
``mix-base-20``), so the driver's fingerprints rerun only what the arm's settings change (a
new generator only where ``gen`` or ``sample`` change). Arms other than ``base`` train FR on
D_orig + D_aug only (the D_repro control is the base arm's). Rows are
appended to ``benchmarks/results/study_effect.csv`` as arms finish; a rerun skips finished
arms, and ``--max-minutes`` stops starting new ones, so the study runs in resumable pieces.

    python benchmarks/study_effect.py --list
    python benchmarks/study_effect.py --arms base,sampler-6 --max-minutes 60
    python benchmarks/study_effect.py --plot   # the figure from the CSV so far
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SEEDS = "0,1,2,3,4"
FP32 = ["gen.precision=fp32", "sample.precision=fp32"]
PRIMARY = ("unseen_verif", "accuracy")
ARMS: dict[str, list[str]] = {
    "base": [],
    # generator budget
    "gen-steps-400": ["gen.steps=400"],
    "gen-steps-2000": ["gen.steps=2000"],
    "gen-width-48": ['gen.overrides={"model_channels":48}'],  # tiny: 32 channels, 1.2 M params
    # sampler
    "sampler-6": ["sample.num_steps=6"],
    "sampler-24": ["sample.num_steps=24"],
    # how much D_aug (and so the real:synthetic ratio: D_orig has 240 images)
    "new-ids-15": ["generate.new_identities=15"],
    "new-ids-60": ["generate.new_identities=60"],
    "per-id-4": ["generate.images_per_identity=4"],
    "per-id-16": ["generate.images_per_identity=16"],
    # (alpha, beta): fixed points on both sides of the grid's choice
    "mix-0.5": ["generate.alpha=0.5", "generate.beta=0.5"],
    "mix-0.8": ["generate.alpha=0.8", "generate.beta=0.8"],
    "mix-1.1": ["generate.alpha=1.1", "generate.beta=1.1"],
    # FR training budget
    "fr-epochs-x2": ["fr.epochs=40"],  # orl-tiny: 20 epochs, cosine schedule
    # k-class mixing (beyond the paper): Dirichlet mixes of 3 identities
    "k3-mix": ["generate.sources=3"],
    # precision: the base config with 20 FR seeds (0-19), to resolve effects of ~1 point, and
    # an independent replication on 20 fresh seeds (20-39), added after seeds-20 gave
    # +1.31 (-0.10 ... +2.73): report it on its own, not pooled as if planned. Its M_orig is
    # seed 20's FR model, so the grid, and with it D_aug, are chosen afresh too.
    "seeds-20": [],
    "seeds-20b": [],
    # AugGen against ScoreMix (arXiv 2506.10226) and pair selection, 20 FR seeds (0-19), all
    # on one fp32 G (the precision pinned, whatever the CPU default): AugGen as today (grid,
    # random pairs), AugGen with far pairs, ScoreMix (lambda = 0.5) with random/far/near pairs.
    "mix-base-20": FP32,
    "auggen-far": [*FP32, "generate.pairs=far"],
    "scoremix-random": [*FP32, "generate.mix=score"],
    "scoremix-far": [*FP32, "generate.mix=score", "generate.pairs=far"],
    "scoremix-near": [*FP32, "generate.mix=score", "generate.pairs=near"],
}
MIX_ARMS = ("mix-base-20", "auggen-far", "scoremix-random", "scoremix-far", "scoremix-near")
ARM_SEEDS = {
    "seeds-20": ",".join(str(s) for s in range(20)),
    "seeds-20b": ",".join(str(s) for s in range(20, 40)),
    **{arm: ",".join(str(s) for s in range(20)) for arm in MIX_ARMS},
}
# The arm whose finished stages an arm starts from (default: base; None: from scratch).
ARM_BASE = {"mix-base-20": None, **{arm: "mix-base-20" for arm in MIX_ARMS[1:]}}
FIELDS = [
    "date", "device", "arm", "settings", "config_hash", "seeds",
    "acc_orig", "acc_orig_std", "acc_aug", "acc_aug_std", "acc_repro",
    "diff_aug", "diff_low", "diff_high", "verdict",
    "tar_orig", "tar_aug", "rank1_orig", "rank1_aug",
    "fd_repro", "fd_aug", "fd_floor", "repro_identity_consistency",
    "alpha", "beta", "m_s", "m_d", "aug_images", "gen_steps", "sampler_steps",
    "stages_run", "wall_s", "gen_params",
    "aug_nearest_sim", "near_copy_fraction", "nearest_is_source_fraction",
    "mix", "pairs", "mix_weights", "denoiser_evals", "mix_wall_s",
    "pair_embed_distance", "pair_cond_distance", "spearman_rho",
    "vs_base", "vs_base_low", "vs_base_high",
]  # fmt: skip
# Columns computed from an arm's finished run folder alone (an older CSV gets them filled in).
DERIVED = (
    "gen_params", "aug_nearest_sim", "near_copy_fraction", "nearest_is_source_fraction",
    "mix", "denoiser_evals", "mix_wall_s", "pair_embed_distance", "spearman_rho", "vs_base",
)  # fmt: skip


def arm_args(arm: str) -> list[str]:
    args = ["--preset", "orl-tiny", "--seeds", ARM_SEEDS.get(arm, SEEDS), "--no-progress"]
    settings = list(ARMS[arm])
    if arm != "base":
        settings.append('train_mix.variants=["aug"]')
    for s in settings:
        args += ["--set", s]
    return args


def m_orig_seed(arm: str) -> int:
    """The pipeline's M_orig is the baseline FR model of the run's first seed."""
    return int(ARM_SEEDS.get(arm, SEEDS).split(",")[0])


def config_hash(arm: str) -> str:
    return hashlib.sha256(json.dumps(arm_args(arm)).encode()).hexdigest()[:12]


def seed_from_base(base: Path, run: Path) -> None:
    """Hard links to base's finished stages (every write is a new file, so base is safe)."""
    run.mkdir(parents=True, exist_ok=True)
    for stage in sorted(base.iterdir()) if base.exists() else []:
        if (stage / "DONE").exists() and not (run / stage.name).exists():
            shutil.copytree(stage, run / stage.name, copy_function=os.link)


def _metric(rows, model, bench, metric) -> list[float]:
    got = [r for r in rows if (r["model"], r["benchmark"], r["metric"]) == (model, bench, metric)]
    return [float(r["value"]) for r in sorted(got, key=lambda r: int(r["seed"]))]


def repro_consistency(run: Path, m_orig_seed: int) -> float:
    """How often M_orig's nearest D_orig class centroid is a D_repro image's conditioning class."""
    import torch

    from auggen.data.index import open_index
    from auggen.data.source import resized
    from auggen.eval import extract_embeddings
    from auggen.mixing.search import class_centroids
    from auggen.recognition.train import FRTrainConfig, load_backbone

    fr_dir = run / "train_fr" / "baseline" / f"seed{m_orig_seed}"
    size = FRTrainConfig.from_dict(json.loads((fr_dir / "config.json").read_text())).input_size
    model = load_backbone(fr_dir)

    def feats(src):
        src = resized(src, size)
        return extract_embeddings(model, src.read(range(len(src))), input_size=size)

    real = open_index(run / "data" / "train.index.json")
    repro = open_index(run / "repro" / "repro.index.json")
    centroids = class_centroids(feats(real), real.labels, real.num_classes)
    nearest = (feats(repro) @ centroids.T).argmax(1)
    return float((nearest == torch.as_tensor(repro.labels)).float().mean())


def generator_params(run: Path) -> int:
    """Parameters of the arm's generator, from its train_gen config (no weights read)."""
    from auggen.data.index import open_index
    from auggen.generator import build_unet

    cfg = json.loads((run / "train_gen" / "config.json").read_text())["config"]["gen"]
    classes = open_index(run / "data" / "train.index.json").num_classes
    net = build_unet(cfg["preset"], cfg["resolution"], classes, **cfg.get("overrides", {}))
    return sum(p.numel() for p in net.parameters())


def derived(run: Path) -> dict:
    """The generator's size and the leakage audit of D_aug (M_orig cosine similarity of each
    generated image to its nearest real training image; near copies; how often that nearest
    image belongs to one of the mixed source identities), and how D_aug was mixed."""
    leak = json.loads((run / "generate" / "leakage.json").read_text())
    return {
        "gen_params": generator_params(run),
        "aug_nearest_sim": leak["generated"]["mean"],
        "near_copy_fraction": leak["near_copy_fraction"],
        "nearest_is_source_fraction": leak["nearest_is_a_source_fraction"],
        **mixing_columns(run),
        **versus_base(run),
    }


def versus_base(run: Path) -> dict:
    """The ScoreMix comparison's arms against their base arm (AugGen as today), seed by
    seed: D_orig + D_aug of this arm minus D_orig + D_aug of the base, with its 95 %
    interval (both share D_orig's models and the seeds); "n/a" for other arms."""
    from auggen.eval.paired import paired_difference
    from auggen.pipeline.store import read_csv

    base = ARM_BASE.get(run.name) if run.name in MIX_ARMS else None
    if base is None or not (run.parent / base / "evaluate" / "metrics.csv").exists():
        return {"vs_base": "n/a", "vs_base_low": "", "vs_base_high": ""}
    mine, theirs = (
        _metric(read_csv(r / "evaluate" / "metrics.csv"), "aug", *PRIMARY)
        for r in (run, run.parent / base)
    )
    d = paired_difference(mine, theirs)
    return {"vs_base": d.mean, "vs_base_low": d.low, "vs_base_high": d.high}


def _stage_json(run: Path, stage: str, name: str) -> dict:
    path = run / stage / name
    return json.loads(path.read_text()) if path.exists() else {}


def mixing_columns(run: Path) -> dict:
    """Mixing mode, pair rule and weights; denoiser evaluations (network rows) and wall time
    of the grid and generate stages together (what making D_aug cost, whichever arm first
    ran them); the mean distances of the pairs used and Spearman's rho between the spaces."""
    cfg = _stage_json(run, "generate", "config.json")["config"]
    g, s = cfg["generate"], cfg["sample"]
    evals = 2 * s["num_steps"] - 1 if s["solver"] == "heun" else s["num_steps"]
    evals *= 2 if s["guidance"] != 1.0 else 1
    mix = g.get("mix", "condition")
    grid = _stage_json(run, "grid", "stats.json")
    gen = _stage_json(run, "generate", "stats.json")
    gen_evals = gen.get("denoiser_evaluations")
    if gen_evals is None:  # written before the count existed: condition mixing, one row
        gen_evals = gen["images"] * evals
    wall = sum(_stage_json(run, st, "timing.json").get("wall_s_all_attempts", 0.0)
               for st in ("grid", "generate"))  # fmt: skip
    pairs = _stage_json(run, "generate", "pairs.json")
    mixing = _stage_json(run, "generate", "mixing.json")
    if not pairs:  # written before generate recorded them
        pairs = pair_summary(run)
    return {
        "mix": mix,
        "pairs": g.get("pairs", "random"),
        "mix_weights": json.dumps(mixing.get("weights")) if mix == "score" else "",
        "denoiser_evals": grid.get("images", 0) * evals + gen_evals,
        "mix_wall_s": round(wall, 1),
        "pair_embed_distance": pairs["embed_distance"]["mean"],
        "pair_cond_distance": pairs["cond_distance"]["mean"],
        "spearman_rho": pairs["embed_vs_cond"]["spearman_rho"],
    }


def pair_summary(run: Path) -> dict:
    """What generate's pairs.json holds (mean distances of each new identity's sources
    between M_orig's class centroids and G's label embeddings, Spearman rho between the two
    over class pairs), computed as generate does, for runs from before it wrote the file."""
    import torch

    from auggen.data.index import open_index
    from auggen.eval import extract_embeddings
    from auggen.generator.train import load_generator
    from auggen.mixing.pairs import distance_correlation, group_distance
    from auggen.mixing.search import class_centroids, l2_normalize
    from auggen.pipeline.stages.generate import condition_embeddings
    from auggen.pipeline.store import read_csv
    from auggen.recognition.train import FRTrainConfig, load_backbone

    seeds = json.loads((run / "train_fr" / "config.json").read_text())["config"]["seeds"]
    fr_dir = run / "train_fr" / "baseline" / f"seed{seeds[0]}"
    size = FRTrainConfig.from_dict(json.loads((fr_dir / "config.json").read_text())).input_size
    real = open_index(run / "data" / "train.index.json")
    images = real.read(range(len(real)))
    feats = extract_embeddings(load_backbone(fr_dir), images, flip=True, input_size=size)
    centroids = class_centroids(feats, real.labels, real.num_classes)
    rows = {r["new_identity"]: r for r in read_csv(run / "generate" / "manifest.csv")}
    groups = torch.tensor([[int(c) for c in r["sources"].split(";")] for r in rows.values()])
    net = load_generator(run / "train_gen" / "model")
    cond = l2_normalize(condition_embeddings(net)[: real.num_classes])
    return {
        "embed_distance": {"mean": float(group_distance(centroids, groups).mean())},
        "cond_distance": {"mean": float(group_distance(cond, groups).mean())},
        "embed_vs_cond": distance_correlation(centroids, cond),
    }


def summarise(arm: str, run: Path, ran: list[str], wall: float) -> dict:
    from auggen.eval.paired import paired_difference
    from auggen.pipeline.store import read_csv

    rows = read_csv(run / "evaluate" / "metrics.csv")
    orig, aug = (_metric(rows, m, *PRIMARY) for m in ("baseline", "aug"))
    repro = _metric(rows, "repro", *PRIMARY)
    d = paired_difference(aug, orig)
    tar = [k for k in {r["metric"] for r in rows} if k.startswith("tar@")]
    tar_key = sorted(tar)[-1] if tar else None
    dist = json.loads((run / "report" / "feature_distances.json").read_text())
    mixing = json.loads((run / "generate" / "mixing.json").read_text())
    grid_csv = run / "grid" / "grid.csv"  # absent where score mixing skipped the grid
    cell = next(
        (
            r
            for r in (read_csv(grid_csv) if grid_csv.exists() else [])
            if mixing["alpha"] is not None
            and abs(float(r["alpha"]) - mixing["alpha"]) < 1e-9
            and abs(float(r["beta"]) - mixing["beta"]) < 1e-9
        ),
        None,
    )
    cfg = json.loads((run / "train_gen" / "config.json").read_text())["config"]["gen"]
    sample = json.loads((run / "repro" / "config.json").read_text())["config"]["sample"]

    def mean(v):
        return sum(v) / len(v) if v else ""

    def std(v):
        m = mean(v)
        return (sum((x - m) ** 2 for x in v) / len(v)) ** 0.5 if v else ""

    return {
        "arm": arm,
        "settings": " ".join(ARMS[arm]) or f"(orl-tiny, seeds {ARM_SEEDS.get(arm, SEEDS)})",
        "config_hash": config_hash(arm),
        "seeds": len(orig),
        "acc_orig": mean(orig),
        "acc_orig_std": std(orig),
        "acc_aug": mean(aug),
        "acc_aug_std": std(aug),
        "acc_repro": mean(repro),
        "diff_aug": d.mean,
        "diff_low": d.low,
        "diff_high": d.high,
        "verdict": d.verdict,
        "tar_orig": mean(_metric(rows, "baseline", PRIMARY[0], tar_key)) if tar_key else "",
        "tar_aug": mean(_metric(rows, "aug", PRIMARY[0], tar_key)) if tar_key else "",
        "rank1_orig": mean(_metric(rows, "baseline", "heldout_ident", "rank1")),
        "rank1_aug": mean(_metric(rows, "aug", "heldout_ident", "rank1")),
        "fd_repro": dist.get("repro", {}).get("fd", ""),
        "fd_aug": dist.get("aug", {}).get("fd", ""),
        "fd_floor": dist.get("orig_halves", {}).get("fd", ""),
        "repro_identity_consistency": repro_consistency(run, m_orig_seed(arm)),
        "alpha": mixing["alpha"] if mixing["alpha"] is not None else "",
        "beta": mixing["beta"] if mixing["beta"] is not None else "",
        "m_s": cell["m_s"] if cell else "",
        "m_d": cell["m_d"] if cell else "",
        "aug_images": mixing["new_identities"] * mixing["images_per_identity"],
        "gen_steps": cfg["steps"],
        "sampler_steps": sample["num_steps"],
        "stages_run": ";".join(ran),
        "wall_s": round(wall, 1),
        **derived(run),
    }


def run_arm(arm: str, out: Path, threads: int) -> dict:
    run = out / arm
    base = ARM_BASE.get(arm, "base")
    if arm != "base" and base is not None:
        seed_from_base(out / base, run)
    cmd = [sys.executable, "-m", "auggen.pipeline", *arm_args(arm), "--out", str(run)]
    cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"arm {arm} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    done = [ln for ln in p.stdout.splitlines() if ln.startswith("done in")]
    ran = done[-1].split("(ran: ", 1)[1].rstrip(")").split(", ") if done else []
    return summarise(arm, run, [r for r in ran if not r.startswith("nothing")], wall)


def finished(csv_path: Path) -> dict[str, dict]:
    if not csv_path.exists():
        return {}
    with open(csv_path, newline="") as f:
        return {r["arm"]: r for r in csv.DictReader(f) if r["config_hash"] == config_hash(r["arm"])}


def upgrade_csv(csv_path: Path, out: Path) -> None:
    """Rewrites (atomically) a CSV from before a column was added, or with rows written by an
    older version of this script, filling the column in."""
    from _harness import append_csv

    if not csv_path.exists():
        return
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        rows, header = list(reader), reader.fieldnames
    done = [r for r in rows if (out / r["arm"] / "generate" / "DONE").exists()]
    missing = [r for r in done if any(not r.get(k) for k in DERIVED)]
    if header == FIELDS and not missing:
        return
    for r in missing:
        r.update(derived(out / r["arm"]))
    tmp = csv_path.with_suffix(".csv.tmp")
    tmp.unlink(missing_ok=True)
    append_csv(tmp, FIELDS, rows)
    os.replace(tmp, csv_path)


def append_row(csv_path: Path, row: dict) -> None:
    from _harness import append_csv, device_name

    row = {"date": time.strftime("%Y-%m-%d"), "device": device_name("cpu"), **row}
    append_csv(csv_path, FIELDS, [row])


def plot(csv_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(finished(csv_path).values())
    if not rows:
        return
    fig, axes = plt.subplots(2, 2, figsize=(14, 9.5))
    axes = axes.ravel()

    def diff(r):
        y = 100 * float(r["diff_aug"])
        lo, hi = (100 * float(r[k]) if r[k] else y for k in ("diff_low", "diff_high"))
        return y, [[y - lo], [hi - y]]

    for x, r in enumerate(rows):  # every arm, its change and 95 % interval
        y, err = diff(r)
        axes[0].errorbar(x, y, yerr=err, fmt="o", capsize=3)
    axes[0].set_xticks(range(len(rows)), [r["arm"] for r in rows], rotation=45, ha="right")

    def scatter(ax, xfn, label):  # the change against one property of the arm's run
        for r in rows:
            x = xfn(r)
            if x is None:
                continue
            y, err = diff(r)
            ax.errorbar(x, y, yerr=err, fmt="o", capsize=3)
            ax.annotate(r["arm"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)

    def budget(r):
        return float(r["gen_params"]) * float(r["gen_steps"]) / 1e9 if r.get("gen_params") else None

    scatter(
        axes[1],
        lambda r: float(r["repro_identity_consistency"]),
        "D_repro identity consistency (M_orig's nearest class = its label)",
    )
    scatter(axes[2], budget, "generator budget: parameters x training steps (billions)")
    axes[2].set_xscale("log")
    scatter(
        axes[3],
        lambda r: float(r["near_copy_fraction"]) if r.get("near_copy_fraction") else None,
        "D_aug near copies of a real training image (fraction, leakage audit)",
    )
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel("D_aug − D_orig, points (95 % CI)")
    fig.suptitle("AugGen on ORL, one factor at a time: unseen-identity verification accuracy")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (default: all)")
    p.add_argument("--out", default=str(REPO / "runs" / "study"), help="run folders")
    p.add_argument("--csv", default=str(REPO / "benchmarks/results/study_effect.csv"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=0, help="start no arm after this")
    p.add_argument("--list", action="store_true", help="print the arms and exit")
    p.add_argument("--plot", action="store_true", help="only redraw the figure")
    args = p.parse_args(argv)
    csv_path, png = Path(args.csv), Path(args.csv).with_suffix(".png")
    if args.list:
        for arm, settings in ARMS.items():
            seeds = ARM_SEEDS.get(arm, SEEDS)
            print(f"{arm:16s} {' '.join(settings) or '(orl-tiny, seeds ' + seeds + ')'}")
        return 0
    upgrade_csv(csv_path, Path(args.out))
    if not args.plot:
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            p.error(f"unknown arm(s) {unknown}; see --list")
        for arm in list(arms):  # every other arm starts from its base arm's stages
            base = ARM_BASE.get(arm, "base")
            if arm == "base" or base is None or base in arms:
                continue
            if not (Path(args.out) / base / "report" / "DONE").exists():
                arms.insert(0, base)
        t0 = time.perf_counter()
        for arm in arms:
            if arm in finished(csv_path):
                print(f"[{arm}] in {csv_path} already")
                continue
            if args.max_minutes and time.perf_counter() - t0 > 60 * args.max_minutes:
                print(f"budget of {args.max_minutes} min spent; rerun to continue")
                break
            print(f"[{arm}] running: {' '.join(ARMS[arm]) or arm}", flush=True)
            row = run_arm(arm, Path(args.out), args.threads)
            append_row(csv_path, row)
            print(
                f"[{arm}] D_aug - D_orig = {100 * row['diff_aug']:+.2f} points "
                f"({row['verdict']}), {row['wall_s']:.0f} s",
                flush=True,
            )
    plot(csv_path, png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
