"""Data at paper scale, measured, not assumed: per-stage memory and disk, loader images/s.

Writes synthetic insightface RecordIO sets (112 px JPEG q95, 40 images per identity, smooth
random "faces" + noise, ~7 KB a record like CASIA's) of each ``--sizes`` (reused when
present), runs every pipeline stage on each as its own ``python -m auggen.pipeline``
subprocess (``--preset micro``, 112 px data, no unseen / held-out split, tiny generator and
FR models, 1 thread, ``data.workers=0`` so that one process does all the work) and records
per (size, stage): peak RSS (ru_maxrss of that process), peak RssAnon and RssFile
(/proc/<pid>/status every 50 ms; anon = what the stage allocates, file = mapped file pages,
mostly the .rec that RecordIOSource memory-maps), bytes added under the run folder, wall s.
``train_fr`` / ``train_mix`` run one full epoch (there is no max-steps option). Then the FR
loader on the largest set: ``EpochBatches`` (``RecordIOSource.read`` + the default
``AugmentConfig`` at 112 px, batches of 256) through ``step_loader`` with 0, 1, 2 workers.
Workers per H100: FlopCounterMode's IR50 forward at 112 px (+ AdaFace logits for CASIA's
10,572 classes) x 3 for a training step; an assumed 40 % of 989 TFLOP/s dense bf16 gives the
images/s the GPU consumes; / the measured images/s per worker. Rows: results/data_cpu.csv.

    python benchmarks/bench_data.py                       # 10 k and 100 k images
    python benchmarks/bench_data.py --quick               # 1 k and 5 k (smoke run)
    python benchmarks/bench_data.py --sizes 10000,100000 --work /data/bench
    python benchmarks/bench_data.py --sizes 10000,50000 --per-id 5 --no-loader  # ids scale too

Between the two sizes it also records what one more image costs per stage
(``peak_rss_growth_per_image``, ``disk_growth_per_image``). Measured 2026-12-03 (2-core Xeon
VM shared with other jobs, 1 thread), 10 k images / 2,000 ids -> 50 k / 10,000 ids
(``--per-id 5``), after shards stopped writing an identity record per class of the set:

    stage      RSS MB      RssAnon MB  disk MB         wall s     RSS/img  disk/img
    data       258 -> 262  154 -> 161  0.16 -> 0.80     9 -> 33    122 B    16 B
    train_gen  505 -> 628  329 -> 450  7.0  -> 12.2    19 -> 43    3.2 KB   128 B
    train_fr   604 -> 755  426 -> 576  2.9  -> 4.9     78 -> 134   4.0 KB   51 B
    repro      279 -> 283  173 -> 176  4.2  -> 21.0    94 -> 171   85 B     421 B
    grid       328 -> 335  201 -> 208  0.09 -> 0.08    31 -> 103   175 B    0
    generate   368 -> 367  241 -> 238  0.11 -> 0.11    42 -> 198   0        0
    train_mix  569 -> 751  390 -> 571  2.9  -> 4.9     37 -> 175   4.8 KB   51 B
    evaluate   234 -> 234  150 -> 150  0    -> 0        4 -> 3     0        0
    report     326 -> 341  216 -> 230  0.30 -> 0.29    57 -> 103   378 B    0

- ``data`` at 100 k images (``--sizes 100000 --stages data``, 40 per id): peak RSS 272 MB
  (RssAnon 165), 1.6 MB written: flat from 10 k.
- ``repro``'s disk now grows with its images (421 B per one-image identity at 32 px):
  21 MB at 10,000 ids, where one record per class in every 16-identity part wrote 327 MB;
  ``part00000.idx`` has 33 lines (1 + 16 images + 16 identities), not 10,017.
- The trainers' growth is the decoded set they hold while its pixels fit in 256 MB
  (``in_memory_if_small``; 3 KB per 32 px image): filled in place it costs them once (+156 MB
  for 50 k images in-process, +302 MB before, when a list of batches was joined by ``cat``
  and every image's name kept). Above 256 MB they stream: +0.5 MB from 10 k to 50 k images
  (index arrays, the epoch permutation), about 13 B per image.

Measured (AMD EPYC VM, 2 cores, idle, 2026-11-30; .rec 71.9 MB / 719 MB), 10 k -> 100 k:

    stage      RSS MB       RssAnon MB   RssFile MB   disk written MB  wall s
    data       309 -> 940   153 -> 175   152 -> 773   0.16 -> 1.60       8 -> 60
    train_gen  551 -> 531   377 -> 345   176 -> 184   5.9  -> 7.3       14 -> 7
    train_fr   567 -> 1241  390 -> 384   181 -> 865   2.4  -> 3.0       25 -> 212
    repro      543 -> 547   367 -> 379   171 -> 171   0.56 -> 10.3      12 -> 62
    grid       528 -> 1164  273 -> 291   255 -> 873   0.08 -> 0.09      23 -> 140
    generate   529 -> 1163  275 -> 291   254 -> 872   0.10 -> 0.33      17 -> 133
    train_mix  568 -> 1247  390 -> 382   181 -> 865   2.4  -> 3.0       26 -> 209
    evaluate   234 -> 234   150 -> 150    86 -> 86    0    -> 0          2 -> 3
    report     271 -> 271   176 -> 176    97 -> 97    0.22 -> 0.23       4 -> 5

- Memory that stages allocate (RssAnon) meets "100 k <= 1.2 x 10 k + 300 MB" everywhere
  (at most +22 MB): no stage holds the set's pixels. Total RSS misses it in data, train_fr,
  grid, generate and train_mix (+630-680 MB), all of it RssFile: the pages of the .rec that
  RecordIOSource's mmap has touched (checked by hand: the mapping's smaps Rss is 702 of
  702 MB after reading every 5th record). Clean page cache, reclaimable and charged once, yet
  in every reading process's RSS: with data.workers=8 each worker can show the whole .rec.
- Disk written by ``data``: 0.22 % of the .rec (target < 1 %), 16 B of index per image.
- Per core: decode 1841 img/s, uint8 -> float 2334, augment 717; the loader gives 451 img/s
  with 0 workers, 500 with 1, 663 with 2 (331 each: 2 workers + the main process, 2 cores).
- H100: IR50 forward 12.62 GFLOP per image (AdaFace logits +0.011), training 37.9 GFLOP;
  40 % of 989 TFLOP/s -> 10,441 img/s; / 500 img/s per worker = 21 workers (32 at the
  contended 331). Float conversion + augmentation are 77 % of a worker's time: decode alone
  would need 6. casia-ir50's data.workers=8 feeds ~4,000 img/s (38 % of the GPU) here.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import append_csv, device_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("date", "device", "size", "stage", "item", "value", "unit", "note")
SIZE, PER_ID, QUALITY = 112, 40, 95
STAGES = "data train_gen train_fr repro grid generate train_mix evaluate report".split()
# Every stage does a slice of its work: a micro generator (32 px, 8 steps, 3 sampler steps),
# a width-8 IR18 at 32 px for one epoch, one D_repro image per identity, 4 x 3 D_aug images.
# 32 px: at 100 k the trainers' decoded set (100 k x 3 x 32^2 = 307 MB) is over
# auggen.data.source.SMALL_SET_BYTES, so they stream as at paper scale; at 10 k they hold it.
SETTINGS = (
    "data.image_size=112 data.unseen_identities=0 data.heldout_per_identity=0 "
    "data.max_identities=0 data.workers=0 gen.resolution=32 gen.steps=8 gen.checkpoint_every=8 "
    "fr.input_size=32 fr.epochs=1 fr.batch_size=128 repro.images_per_identity=1 "
    'train_mix.variants=["aug"]'
).split()
H100_BF16_DENSE = 989e12  # FLOP/s, SXM datasheet (dense, no sparsity)
MFU = 0.40  # assumed achievable fraction for a conv net at 112 px with bf16 autocast
CASIA_CLASSES = 10_572


# -- synthetic RecordIO ------------------------------------------------------------------


def synth_faces(labels: torch.Tensor, noise: float = 5.0) -> np.ndarray:
    """uint8 (N, 112, 112, 3): per identity a smooth colour field (8x8 upsampled) lit
    brighter inside a face ellipse, per image finer blobs (24x24) and Gaussian noise."""
    n = len(labels)
    g = torch.Generator().manual_seed(int(labels[0]) * 7919 + n)
    ids, inv = labels.unique(return_inverse=True)

    def up(t):
        return F.interpolate(t, size=(SIZE, SIZE), mode="bicubic", align_corners=False)

    per_id = [torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(int(c))) for c in ids]
    coarse = up(torch.stack(per_id))[inv] * 160 + 40
    fine = up(torch.rand(n, 3, 24, 24, generator=g) - 0.5) * 50
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    face = ((xx / 0.7) ** 2 + (yy / 0.9) ** 2 < 1).float()
    x = coarse * (0.6 + 0.4 * face) + fine + noise * torch.randn(n, 3, SIZE, SIZE, generator=g)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def write_set(prefix: Path, n: int, per_id: int = PER_ID) -> Path:
    """``prefix``.rec/.idx with ``n`` images, ``per_id`` per identity, streamed (one chunk of
    1,000 in memory)."""
    import io

    from PIL import Image

    from auggen.data.recordio import _write_insightface

    rec = prefix.with_suffix(".rec")
    if rec.exists() and rec.with_suffix(".idx").exists():
        return rec
    labels = [i // per_id for i in range(n)]
    k = labels[-1] + 1

    def bodies():
        for lo in range(0, n, 1000):
            chunk = torch.tensor(labels[lo : lo + 1000])
            for img, y in zip(synth_faces(chunk), chunk.tolist()):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, "JPEG", quality=QUALITY)
                yield 0, float(y), buf.getvalue()

    t0 = time.perf_counter()
    _write_insightface(rec, labels, k, bodies())
    (prefix.parent / "property").write_text(f"{k},{SIZE},{SIZE}")
    print(
        f"wrote {rec} ({n} images, {rec.stat().st_size / 1e6:.1f} MB) in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return rec


# -- one stage as a subprocess -----------------------------------------------------------


def tree_bytes(root: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(root) for f in fs)


def _status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return out


# A small launcher forks the stage and reports its ru_maxrss: a child forked straight from
# this (large) process would inherit our RSS as its high-water mark across exec.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
with open(sys.argv[1], "w") as f:
    f.write(f"{pid}\\n")
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "a") as f:
    f.write(f"{ru.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_stage(stage: str, prefix: Path, run: Path, log: Path) -> dict:
    """Run one stage; peak RSS / peak RssAnon / peak RssFile (MB), disk (bytes), wall (s)."""
    cmd = f"-m auggen.pipeline --preset micro --stages {stage} --threads 1 --no-progress"
    cmd = [*cmd.split(), "--data", str(prefix), "--out", str(run)]
    for s in SETTINGS:
        cmd += ["--set", s]
    before = tree_bytes(run) if run.exists() else 0
    peaks = {"RssAnon": 0, "RssFile": 0}
    report = log.with_suffix(".rss")
    report.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        p = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(report), *cmd],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        while p.poll() is None:
            lines = report.read_text().split() if report.exists() else []
            for k, v in (_status_kb(int(lines[0])) if lines else {}).items():
                peaks[k] = max(peaks[k], v)
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    lines = report.read_text().split() if report.exists() else []
    if p.returncode != 0 or len(lines) < 2:
        raise RuntimeError(f"stage {stage} failed (rc {p.returncode}); see {log}")
    return {
        "peak_rss": int(lines[1]) / 1024,  # Linux: KiB
        "peak_rss_anon": peaks["RssAnon"] / 1024,
        "peak_rss_file": peaks["RssFile"] / 1024,
        "disk_written": tree_bytes(run) - before,
        "wall": wall,
    }


# -- the FR loader -----------------------------------------------------------------------


def loader_rates(index: Path, workers: tuple[int, ...], steps: int) -> list[tuple]:
    """(item, value, unit, note): decode, to-float and augment alone, then EpochBatches
    through step_loader at each worker count (each worker's first batch = warm-up, not timed)."""
    from auggen.data.index import open_index
    from auggen.data.loader import step_loader
    from auggen.recognition.augment import AugmentConfig, augment_batch
    from auggen.recognition.batches import EpochBatches, seeded_generator, to_model_input
    from auggen.recognition.train import FRTrainConfig

    src = open_index(index)
    cfg = FRTrainConfig(input_size=SIZE, batch_size=256)  # default AugmentConfig
    n_steps = min(len(src) // 256, steps + 2)
    info = SimpleNamespace(rank=0, world_size=1)
    rows = []

    def rate(fn, items, what, note):  # images/s over ``items`` after one warm-up call
        fn(items[0])
        t0 = time.perf_counter()
        out = [fn(x) for x in items]
        rows.append(
            (f"{what}_img_per_s", len(items) * 256 / (time.perf_counter() - t0), "img/s", note)
        )
        return out

    batches = [range(s * 256, (s + 1) * 256) for s in range(min(n_steps, 5))]
    xs = rate(src.read, batches, "decode", "RecordIOSource.read, batch 256, 1 thread")
    xs = rate(to_model_input, xs, "to_float", "uint8 -> float [-1, 1] (to_model_input)")
    aug = AugmentConfig()
    rate(
        lambda x: augment_batch(x, aug, seeded_generator(0)),
        xs,
        "augment",
        "augment_batch, default AugmentConfig",
    )
    for w in workers:
        make = EpochBatches(src, cfg, 0, info, n_steps, augment_here=True)
        it = iter(step_loader(make, 0, n_steps, w))
        for _ in range(max(w, 1)):  # warm-up: every worker's first batch (they start together)
            next(it)
        t0 = time.perf_counter()
        k = sum(1 for _ in it)
        total = k * 256 / (time.perf_counter() - t0)
        note = f"EpochBatches via step_loader, batch 256, {k} timed batches"
        rows.append((f"loader_w{w}_img_per_s", total, "img/s", note))
        rows.append((f"loader_w{w}_img_per_s_per_worker", total / max(w, 1), "img/s", note))
    return rows


def ir50_flops() -> tuple[float, float]:
    """(forward FLOPs of IR50 at 112x112, AdaFace logits FLOPs for CASIA), per image."""
    from torch.utils.flop_counter import FlopCounterMode

    from auggen.recognition import build_backbone

    net = build_backbone("ir50", SIZE, 512).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 3, SIZE, SIZE))
    return float(fc.get_total_flops()), 2.0 * 512 * CASIA_CLASSES


# -- driver ------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 k and 5 k images (smoke run)")
    p.add_argument("--sizes", default="10000,100000", help="comma-separated image counts")
    p.add_argument("--work", default="/tmp/auggen_bench_data", help="sets and runs go here")
    p.add_argument("--stages", default=",".join(STAGES), help="stages to measure (in order)")
    p.add_argument("--loader-steps", type=int, default=20, help="timed batches per worker count")
    p.add_argument(
        "--per-id",
        type=int,
        default=PER_ID,
        help=f"images per identity (default {PER_ID}; 5 gives 2,000 identities per 10 k images)",
    )
    p.add_argument("--no-loader", action="store_true", help="skip the loader and IR50 rows")
    p.add_argument("--csv", default=str(REPO / "benchmarks" / "results" / "data_cpu.csv"))
    args = p.parse_args()
    torch.set_num_threads(1)
    sizes = [1000, 5000] if args.quick else [int(s) for s in args.sizes.split(",")]
    stages = [s for s in args.stages.split(",") if s]
    steps = 4 if args.quick else args.loader_steps
    work = Path(args.work)
    date, dev = time.strftime("%Y-%m-%dT%H:%M:%S"), device_name("cpu")
    rows: list[tuple] = []

    def add(size, stage, item, value, unit, note=""):
        value = round(value, 3) if isinstance(value, float) else value
        rows.append((date, dev, size, stage, item, value, unit, note))
        print(f"{size!s:>7} {stage:10s} {item:36s} {value!s:>14} {unit:6s} {note}", flush=True)

    results: dict[int, dict[str, dict]] = {}
    rates: dict[str, float] = {}
    for n in sizes:
        tag = f"n{n}" if args.per_id == PER_ID else f"n{n}_p{args.per_id}"
        prefix = work / "sets" / tag / "train"
        rec = write_set(prefix, n, args.per_id)
        rec_bytes = rec.stat().st_size
        ids = -(-n // args.per_id)
        add(n, "rec", "rec_bytes", rec_bytes, "B", f"{rec_bytes / n:.0f} B/image, {ids} ids")
        run, logs = work / "runs" / tag, work / "logs" / tag
        shutil.rmtree(run, ignore_errors=True)
        logs.mkdir(parents=True, exist_ok=True)
        results[n] = {}
        for stage in stages:
            r = results[n][stage] = run_stage(stage, prefix, run, logs / f"{stage}.log")
            for item, unit in (
                ("peak_rss", "MB"),
                ("peak_rss_anon", "MB"),
                ("peak_rss_file", "MB"),
                ("disk_written", "B"),
                ("wall", "s"),
            ):
                add(n, stage, item, r[item], unit)
        if "data" in results[n]:
            frac = results[n]["data"]["disk_written"] / rec_bytes
            add(n, "data", "disk_written_fraction_of_rec", frac * 100, "%", "target < 1 %")
        if n == sizes[-1] and "data" in stages and not args.no_loader:
            for item, value, unit, note in loader_rates(
                run / "data" / "train.index.json", (0, 1, 2), steps
            ):
                add(n, "loader", item, value, unit, note)
                rates[item] = value
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for stage, item in ((s, i) for s in stages for i in ("peak_rss", "peak_rss_anon")):
            a, b = results[lo][stage][item], results[hi][stage][item]
            ok = b <= 1.2 * a + 300
            note = f"{hi} vs {lo}: {b:.0f} {'<=' if ok else '>'} 1.2 x {a:.0f} + 300 MB"
            add(hi, stage, f"{item}_target_met", int(ok), "bool", note)
        for stage in stages:  # what each further image costs, between the two sizes
            a, b = results[lo][stage], results[hi][stage]
            per = (b["peak_rss"] - a["peak_rss"]) * 1024 / (hi - lo)
            add(hi, stage, "peak_rss_growth_per_image", per * 1024, "B", f"{lo} -> {hi} images")
            disk = (b["disk_written"] - a["disk_written"]) / (hi - lo)
            add(hi, stage, "disk_growth_per_image", disk, "B", f"{lo} -> {hi} images")
    if args.no_loader:
        out = Path(args.csv)
        append_csv(out, FIELDS, rows)
        print(f"{len(rows)} rows appended to {out}")
        return
    fwd, head = ir50_flops()
    train = 3 * (fwd + head)
    gpu = H100_BF16_DENSE * MFU / train
    add("", "ir50", "forward_gflop_per_image", fwd / 1e9, "GFLOP", "FlopCounterMode, 112x112")
    add(
        "",
        "ir50",
        "train_gflop_per_image",
        train / 1e9,
        "GFLOP",
        f"3 x (forward + AdaFace logits {head / 1e9:.3f} GFLOP, {CASIA_CLASSES} classes)",
    )
    add("", "ir50", "h100_img_per_s", gpu, "img/s", f"{MFU:.0%} of 989 TFLOP/s bf16 dense")
    for w in (1, 2):
        per = rates.get(f"loader_w{w}_img_per_s_per_worker")
        if per:
            add(
                "",
                "ir50",
                f"workers_per_h100_from_w{w}",
                math.ceil(gpu / per),
                "workers",
                f"{gpu:.0f} img/s / {per:.0f} img/s per worker",
            )
    out = Path(args.csv)
    append_csv(out, FIELDS, rows)
    print(f"{len(rows)} rows appended to {out}")


if __name__ == "__main__":
    main()
