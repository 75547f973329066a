"""Stage ``report``: report.md with the paper's table and the figures behind it."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

from auggen.analysis import feature_distances as fdkd
from auggen.analysis.figures import pyplot, save_figure
from auggen.analysis.labelled_montage import save_labelled_montage
from auggen.data import resize_images
from auggen.data.index import open_index
from auggen.data.source import resized
from auggen.eval.paired import paired_difference
from auggen.infra.files import atomic_write_json
from auggen.ops import backend_line
from auggen.pipeline.stages.common import embedder, fr_run_dir, m_orig, open_data
from auggen.pipeline.stages.evaluate import MODEL_LABELS
from auggen.pipeline.stages.mix_report import grid_lines, method_lines, mix_label
from auggen.pipeline.store import read_csv

STAGE_ORDER = (
    "data",
    "train_gen",
    "train_fr",
    "repro",
    "grid",
    "generate",
    "train_mix",
    "evaluate",
    "report",
)


def _read(path: Path):
    return json.loads(Path(path).read_text())


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _signed(x: float) -> str:
    # A real minus sign, so that "−0.40" and "+0.40" line up in the report.
    return f"{x:+.2f}".replace("-", "\u2212")


def paired_verdicts(rows: list[dict], variants: list[str], cols: list[tuple]) -> list[str]:
    """One line per (variant, benchmark metric): the paired difference with D_orig over seeds.

    ``rows`` are metrics.csv rows (model, seed, benchmark, metric, value). Each variant is
    compared with the baseline trained with the same seed; "better"/"worse" only when the
    95 % Student-t interval of the mean difference excludes zero.
    """

    per_seed: dict[tuple, dict[str, float]] = {}
    for r in rows:
        key = (r["model"], r["benchmark"], r["metric"])
        per_seed.setdefault(key, {})[str(r["seed"])] = float(r["value"])
    lines = []
    for v in variants[1:]:
        for b, m in cols:
            base, new = per_seed.get(("baseline", b, m), {}), per_seed.get((v, b, m), {})
            seeds = sorted(set(base) & set(new))  # the order does not change the statistics
            if not seeds:
                continue
            d = paired_difference([new[s] for s in seeds], [base[s] for s in seeds])
            n = f"{d.n} paired seed{'s' if d.n > 1 else ''}"
            spread = (
                f"95 % CI {_signed(100 * d.low)} … {_signed(100 * d.high)}, " if d.n > 1 else ""
            )
            lines.append(
                f"- {MODEL_LABELS[v]} vs D_orig on {b} {m}: {_signed(100 * d.mean)} points "
                f"({spread}{n}): {d.verdict}"
            )
    return lines


def results_table(
    summary: list[dict], variants: list[str], rows: list[dict] | None = None
) -> tuple[str, list[str]]:
    """Markdown table (mean ± std in %) and verdicts from the per-seed metrics.csv ``rows``."""
    cols = []
    for r in summary:
        key = (r["benchmark"], r["metric"])
        if r["metric"] != "accuracy_fold_std" and key not in cols:
            cols.append(key)
    cell = {(r["model"], r["benchmark"], r["metric"]): r for r in summary}
    head = "| training data | " + " | ".join(f"{b}: {m}" for b, m in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for v in variants:
        vals = []
        for b, m in cols:
            r = cell.get((v, b, m))
            vals.append(f"{_pct(r['mean'])} ± {_pct(r['std'])}" if r else "–")
        lines.append(f"| {MODEL_LABELS[v]} | " + " | ".join(vals) + " |")
    return "\n".join(lines), paired_verdicts(rows or [], variants, cols)


SPIKE_FACTOR = 10.0  # a logged loss this many times the recent median is a spike
SPIKE_WINDOW = 20  # "recent": the preceding logged points the median is taken over


def loss_curve_flags(losses, spike_factor: float = SPIKE_FACTOR) -> list[str]:
    """Why a logged loss curve looks unusual; an empty list when nothing stands out.

    Checks: non-finite values; the mean of the last fifth of the points above that of the
    first fifth (not decreasing); a point more than ``spike_factor`` times the median of the
    preceding ``SPIKE_WINDOW`` points. EDM2's loss carries the learned log-variance and can
    sit near or below zero, so "times the median" is measured from the median in units of
    max(|median|, 1.4826 MAD): for a positive, settled loss that is plain "> 10x median".
    """
    vals = []
    for x in losses:
        try:
            vals.append(float(x))
        except (TypeError, ValueError):  # null or garbage in the log counts as non-finite
            vals.append(math.nan)
    flags = []
    bad = [i for i, x in enumerate(vals) if not math.isfinite(x)]
    if bad:
        flags.append(f"{len(bad)} non-finite loss value(s), the first at point {bad[0] + 1}")
    pts = [(i, x) for i, x in enumerate(vals) if math.isfinite(x)]
    if len(pts) >= 2:
        w = max(1, len(pts) // 5)
        first = statistics.fmean(x for _, x in pts[:w])
        last = statistics.fmean(x for _, x in pts[-w:])
        if last > first:
            flags.append(
                f"not decreasing: mean of the last {w} point(s) {last:.4g} > first {first:.4g}"
            )
    spikes = []
    for k in range(3, len(pts)):
        recent = [x for _, x in pts[max(0, k - SPIKE_WINDOW) : k]]
        med = statistics.median(recent)
        mad = 1.4826 * statistics.median(abs(x - med) for x in recent)
        scale = max(abs(med), mad)
        if scale > 0 and pts[k][1] - med > (spike_factor - 1) * scale:
            spikes.append(pts[k])
    if spikes:
        i, x = max(spikes, key=lambda p: p[1])
        flags.append(
            f"{len(spikes)} spike(s) above {spike_factor:g}x the running median, "
            f"the largest {x:.4g} at point {i + 1}"
        )
    return flags


def _history_line(label: str, path: Path) -> str:
    if not path.exists():
        return f"- {label}: no training history found ({path.name} missing)"
    try:
        hist = _read(path)
        losses = [h.get("loss") for h in hist]
    except (ValueError, TypeError, AttributeError) as e:
        return f"- {label}: **unusual**: unreadable history ({type(e).__name__})"
    flags = loss_curve_flags(losses)
    if flags:
        return f"- {label}: **unusual**: " + "; ".join(flags) + f" ({len(losses)} points)"
    if not losses:
        return f"- {label}: empty history"
    return f"- {label}: ok ({len(losses)} points, loss {losses[0]:.4g} → {losses[-1]:.4g})"


def training_health(cfg, root: Path) -> list[str]:
    """Report lines: one per trained model, its loss curve checked by ``loss_curve_flags``."""
    lines = [_history_line("generator", root / "train_gen" / "model" / "history.json")]
    runs = [("baseline", root / "train_fr")]
    runs += [(v, root / "train_mix") for v in cfg.train_mix.variants]
    for variant, stage_dir in runs:
        for seed in cfg.seeds:
            path = fr_run_dir(stage_dir, variant, seed) / "history.json"
            lines.append(_history_line(f"{MODEL_LABELS[variant]}, seed {seed}", path))
    return lines


def _first(src, label: int) -> int:
    return int((src.labels == label).nonzero()[0])


def mixes_figure(root: Path, out: Path, n_examples: int, per: int) -> bool:
    """Each row: a real image of source i, generated images, a real image of source j."""
    gen_dir = root / "generate"
    if not (gen_dir / "aug.index.json").exists():
        return False
    aug, real = open_index(gen_dir / "aug.index.json"), open_index(root / "data/train.index.json")
    manifest = read_csv(gen_dir / "manifest.csv")

    size = aug.size
    rows, labels, seen = [], [], []
    for r in manifest:
        lab = int(r["label"])
        if lab in seen:
            continue
        seen.append(lab)
        i, j = int(r["source_i"]), int(r["source_j"])
        src = resize_images(real.read([_first(real, i), _first(real, j)]), size)
        gen = aug.read((aug.labels == lab).nonzero().flatten()[:per])
        rows.append([src[0], *gen, src[1]])
        labels.append(f"new id {lab}\ni = {i}, j = {j}\n{mix_label(r)}")
        if len(rows) == n_examples:
            break
    score = manifest and manifest[0].get("mix") == "score"
    cols = ["real i", *["Σ w·D(x; c)" if score else "α·c_i + β·c_j"] * per, "real j"]
    save_labelled_montage(rows, labels, cols, out / "mixes.png")
    return True


def repro_figure(root: Path, out: Path, n: int, per: int) -> bool:
    path = root / "repro" / "repro.index.json"
    if not path.exists():
        return False
    rep, real = open_index(path), open_index(root / "data" / "train.index.json")

    rows = []
    classes = range(min(n, real.num_classes))
    for c in classes:
        r = resize_images(real.read((real.labels == c).nonzero().flatten()[:2]), rep.size)
        rows.append([*r, *rep.read((rep.labels == c).nonzero().flatten()[:per])])
    cols = ["real", "real", *["G(one-hot c)"] * per]
    save_labelled_montage(rows, [f"class {c}" for c in classes], cols, out / "repro.png")
    return True


def curves_figure(cfg, root: Path, out: Path) -> bool:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    any_curve = False
    gen_hist = root / "train_gen" / "model" / "history.json"
    if gen_hist.exists():
        h = _read(gen_hist)
        axes[0].plot([e["kimg"] for e in h], [e["loss"] for e in h])
        any_curve = True
    axes[0].set_xlabel("kimg")
    axes[0].set_ylabel("EDM2 loss")
    axes[0].set_title("generator")
    runs = [("baseline", root / "train_fr")] + [
        (v, root / "train_mix") for v in cfg.train_mix.variants
    ]
    for v, (variant, stage_dir) in enumerate(runs):
        for k, seed in enumerate(cfg.seeds):
            p = fr_run_dir(stage_dir, variant, seed) / "history.json"
            if p.exists():
                h = _read(p)
                axes[1].plot(
                    [e["epoch"] for e in h],
                    [e["loss"] for e in h],
                    color=f"C{v}",
                    ls=("-", "--", ":", "-.")[k % 4],
                    label=f"{MODEL_LABELS[variant]} (seed {seed})",
                )
                any_curve = True
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("training loss (margin head)")
    axes[1].set_title("face recognition")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "curves.png")
    plt.close(fig)
    return any_curve


def timing_table(root: Path) -> str:
    lines = ["| stage | wall time (s) | all attempts (s) | device |", "|---|---:|---:|---|"]
    total = 0.0
    for s in STAGE_ORDER:
        p = root / s / "timing.json"
        if p.exists():
            t = _read(p)
            total += t["wall_s_all_attempts"]
            lines.append(
                f"| {s} | {t['wall_s']:.1f} | {t['wall_s_all_attempts']:.1f} | {t['device']} |"
            )
    lines.append(f"| total (before report) | | {total:.1f} | |")
    return "\n".join(lines)


FEW_UNSEEN = 10  # below this many unseen identities the report warns about the pair count


def split_notes(split: dict) -> list[str]:
    """Report lines on a small-data split and on a verification protocol with few pairs."""
    lines = []
    note = split.get("report", {}).get("split")
    if note:
        lines += ["", f"Split: {note}."]
    pairs = split.get("verification_pairs") or {}
    n = split["unseen_identities"]
    if pairs and (n < FEW_UNSEEN or pairs["used"] < pairs["requested"]):
        lines += [
            "",
            f"With {n} unseen identities the verification protocol has few pairs: "
            f"{pairs['used']} used (data.verification_pairs={pairs['requested']}) of the "
            f"{pairs['genuine_available']} genuine and {pairs['impostor_available']} impostor "
            f"pairs those identities allow ({pairs['used'] // 10} per fold of the 10); one "
            f"pair moves the accuracy by {100 / pairs['used']:.2g} points.",
        ]
    return lines


def _set_sources(cfg, in_dirs) -> dict:
    """D_orig at the generator's resolution (as G saw it), then D_repro and D_aug when their
    stage left an index (D_aug's holds only the new identities)."""
    sources = {"orig": resized(open_data(in_dirs), cfg.gen.resolution)}
    for name, (stage, index) in fdkd.SETS.items():
        path = Path(in_dirs[stage]) / index
        if path.exists():
            sources[name] = open_index(path)
    return sources


def run(cfg, in_dirs, out_dir, rt) -> None:
    root = Path(in_dirs["data"]).parent  # the run folder (out_dir may be .pending/report)
    split = _read(root / "data" / "split.json")
    summary = _read(root / "evaluate" / "summary.json")
    benches = _read(root / "evaluate" / "benchmarks.json")
    variants = ["baseline", *cfg.train_mix.variants]
    metric_rows = read_csv(root / "evaluate" / "metrics.csv")
    table, verdicts = results_table(summary, variants, metric_rows)
    mixing = _read(root / "generate" / "mixing.json")
    leak = _read(root / "generate" / "leakage.json")
    _figures(cfg, root, out_dir)
    embed = embedder(m_orig(cfg, in_dirs, rt.device), cfg, rt.device)
    feats = fdkd.set_features(embed, _set_sources(cfg, in_dirs), cfg.embed.batch_size)
    dist = fdkd.distances(feats)
    atomic_write_json(out_dir / "feature_distances.json", dist)
    grid_csv = root / "grid" / "grid.csv"
    scores = {}
    if grid_csv.exists() and mixing.get("alpha") is not None:
        scores = fdkd.mix_scores(read_csv(grid_csv), mixing["alpha"], mixing["beta"])
    lines = [
        *_header_lines(cfg, split),
        *_results_lines(table, verdicts, benches),
        *grid_lines(cfg, root, mixing),
        "",
        *method_lines(root, out_dir),
        *_mixes_lines(mixing),
        *_distance_lines(dist, scores, metric_rows),
        *_health_lines(cfg, root),
        *_leakage_lines(leak),
        *_timing_lines(root),
    ]
    (out_dir / "report.md").write_text("\n".join(lines))


def _figures(cfg, root: Path, out_dir: Path) -> None:
    for name in ("heatmap.png", "preview.png"):
        if (root / "grid" / name).exists():
            shutil.copy(root / "grid" / name, out_dir / f"grid_{name}")
    shutil.copy(root / "generate" / "leakage.png", out_dir / "leakage.png")
    mixes_figure(root, out_dir, cfg.report.mix_examples, cfg.report.images_per_example)
    repro_figure(root, out_dir, cfg.report.mix_examples, cfg.report.images_per_example)
    curves_figure(cfg, root, out_dir)


def _header_lines(cfg, split: dict) -> list[str]:
    return [
        "# AugGen run report",
        "",
        f"Data: {split['source']} — {split['train_identities']} training identities "
        f"({split['train_images']} images, stored at {split['image_size'][0]} px), "
        f"{split['unseen_identities']} unseen identities for verification, "
        f"{split['heldout_images']} held-out images for identification. "
        f"Generator {cfg.gen.preset} at {cfg.gen.resolution} px; FR {cfg.fr.backbone} "
        f"(width {cfg.fr.width}) + {cfg.fr.head} at {cfg.fr.input_size} px, "
        f"{cfg.fr.epochs} epochs; seeds {list(cfg.seeds)}; device {cfg.device}.",
        f"Fused ops in the report's process: {backend_line()} (the pipeline log names them "
        "after each stage that used them).",
        *split_notes(split),
        "",
    ]


def _results_lines(table: str, verdicts: list[str], benches: list[dict]) -> list[str]:
    return [
        "## Results (mean ± std over FR seeds, %)",
        "",
        table,
        "",
        "Each model against D_orig, seed by seed (the same FR seed, the same benchmark): the "
        "mean paired difference in points and its 95 % Student-t interval. A model is called "
        "better or worse only when that interval excludes zero; with few seeds it is wide.",
        "",
        *verdicts,
        "",
        "Benchmarks:",
        *[f"- **{b['name']}**: {b.get('about', b['kind'])}" for b in benches],
        "",
        "These are the measured numbers of this run, whether or not AugGen helped here. "
        "Verification accuracy follows insightface's 10-fold protocol (its distance "
        "threshold grid), as published tables do.",
        "",
    ]


def _mixes_lines(mixing: dict) -> list[str]:
    return [
        "## Mixed identities",
        "",
        f"{mixing['new_identities']} new identities × {mixing['images_per_identity']} images. "
        "Each row (labelled with its two source identities i, j and α, β): a real image of "
        "source i, generated images of the new identity, a real image of source j.",
        "",
        "![mixes](mixes.png)",
        "",
        "D_repro (G with one-hot conditions): two real images, then reproductions.",
        "",
        "![repro](repro.png)",
        "",
    ]


def _distance_lines(dist: dict, scores: dict, metric_rows: list[dict]) -> list[str]:
    return [
        "## Distribution distances (FD, KD)",
        "",
        "Fréchet distance of Gaussian fits (FD) and the unbiased cubic-kernel MMD² (KD, as "
        "KID computes it) between each generated set and D_orig, in M_orig's feature space "
        "(flip-fused unit embeddings; D_orig read at the generator's resolution), beside the "
        "mixing scores of D_aug's grid cell and each set's paired accuracy change against "
        "D_orig. The paper found that FD and KD correlate poorly with the downstream gain: a "
        "set closer to D_orig is not a set that helps FR more, which is why AugGen picks "
        "(α, β) by m_s + m_d instead. With fewer images than feature dimensions the "
        "covariances are rank-deficient and FD is noisy; compare with the floor row.",
        "",
        *fdkd.table(dist, scores, metric_rows),
        "",
        "## Training curves",
        "",
        "![curves](curves.png)",
        "",
    ]


def _health_lines(cfg, root: Path) -> list[str]:
    return [
        "## Training health",
        "",
        "Each logged loss curve, checked for non-finite values, a last fifth of the points "
        "averaging higher than the first fifth (not decreasing), and spikes above "
        f"{SPIKE_FACTOR:g}x the running median. A flag asks for a look, it is not an error.",
        "",
        *training_health(cfg, root),
        "",
    ]


def _leakage_lines(leak: dict) -> list[str]:
    gen = leak["generated"]
    lines = [
        "## Leakage audit",
        "",
        f"Nearest real training image (M_orig cosine) of each of the "
        f"{gen['count']} generated images: mean {gen['mean']:.3f}, "
        f"median {gen['quantiles']['q50']:.3f}, max "
        f"{gen['quantiles']['q100']:.3f}. Near-copies (cos ≥ "
        f"{leak['threshold']:g}): **{leak['near_copies']}** "
        f"({100 * leak['near_copy_fraction']:.1f} %). The nearest real image belongs to one "
        f"of the two sources for {100 * leak['nearest_is_a_source_fraction']:.1f} % of them.",
    ]
    if "real_heldout_reference" in leak:
        r = leak["real_heldout_reference"]
        lines.append(
            f"For scale: real held-out photos of training identities reach mean "
            f"{r['mean']:.3f}, median {r['quantiles']['q50']:.3f}; "
            f"{100 * leak['closer_than_heldout_median_fraction']:.1f} % of the generated images "
            "are closer to a training image than that median."
        )
    return [*lines, "", "![leakage](leakage.png)", ""]


def _timing_lines(root: Path) -> list[str]:
    return [
        "## Stage times",
        "",
        timing_table(root),
        "",
        "Per-stage configs: `<stage>/config.json`; metrics: `evaluate/metrics.csv`; "
        "grid: `grid/grid.csv`; D_aug: `generate/manifest.csv`, `generate/images/`.",
        "",
    ]
