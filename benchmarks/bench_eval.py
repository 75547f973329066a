"""Benchmark evaluation throughput: 10-fold verification, TAR@FAR, rank-1 search, embedding.

- ``verification``: ``verification_accuracy`` on N cosine scores (every-split search, and
  insightface's 400-threshold grid), pairs/s.
- ``tar_at_far``: TAR at six FARs on N scores (IJB-C has ~15.7 M pairs), pairs/s.
- ``rank1``: P probes against a G-image gallery, D=512, FAISS IndexFlatIP vs torch matmul +
  argmax, probes/s.
- ``embed``: ``extract_embeddings`` (flip-fused) of a small IR backbone, images/s.

    python benchmarks/bench_eval.py [--quick] [--device cpu] [--out results/eval_cpu.csv]

Writes CSV rows: task, size, backend, device, ms_p20, ms_p50, ms_p80, throughput, unit.
"""

import argparse
import csv
import os
import sys

import numpy as np
import torch

from auggen.eval import extract_embeddings, rank1_identification, tar_at_far, verification_accuracy
from auggen.eval.roc import IJB_FARS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import device_name, time_fn  # noqa: E402

FIELDS = ["task", "size", "backend", "device", "ms_p20", "ms_p50", "ms_p80", "throughput", "unit"]


def time_ms(fn, reps: int, warmup: int = 1, device="cpu") -> tuple[float, float, float]:
    t = time_fn(fn, device, warmup, reps)
    return t.p20, t.p50, t.p80


def bench_verification(n, reps, dev):
    rng = np.random.default_rng(0)
    same = rng.random(n) < 0.5
    scores = rng.normal(size=n) + 2 * same
    rows = []
    for backend, thr in (("every-split", "exact"), ("insightface-grid", "insightface")):
        t = time_ms(lambda thr=thr: verification_accuracy(scores, same, 10, thr), reps)
        rows.append(["verification", f"{n} pairs", backend, dev, *t, n / t[1] * 1e3, "pairs/s"])
    t = time_ms(lambda: tar_at_far(scores, same, IJB_FARS), reps)
    rows.append(["tar_at_far", f"{n} pairs", "numpy", dev, *t, n / t[1] * 1e3, "pairs/s"])
    return rows


def bench_rank1(probes, gallery, reps, dev):
    g = torch.Generator().manual_seed(0)
    gal = torch.randn(gallery, 512, generator=g)
    labels = torch.arange(gallery)
    idx = torch.randint(0, gallery, (probes,), generator=g)
    prb = gal[idx] + 0.8 * torch.randn(probes, 512, generator=g)
    rows = []
    for backend in ("faiss", "torch"):
        try:
            t = time_ms(
                lambda b=backend: rank1_identification(prb, idx, gal, labels, backend=b), reps
            )
        except ImportError:
            continue
        rows.append(
            ["rank1", f"{probes}x{gallery}x512", backend, dev, *t, probes / t[1] * 1e3, "probes/s"]
        )
    return rows


def bench_embed(device, reps, dev, quick):
    try:
        from auggen.recognition import build_backbone
    except ImportError:
        return []
    configs = [("ir18", 16, 32, 256)] + ([] if quick else [("ir50", 64, 112, 32)])
    rows = []
    for name, width, size, n in configs:
        model = build_backbone(name, input_size=size, width=width).to(device)
        imgs = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
        t = time_ms(
            lambda m=model, x=imgs: extract_embeddings(m, x, 128, True, device), reps, 1, device
        )
        label = f"{name} w{width} {size}px x{n}"
        rows.append(["embed", label, "flip-fused", dev, *t, n / t[1] * 1e3, "img/s"])
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    ap.add_argument("--out", default=None, help="CSV path (default results/eval_<dev>.csv)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dev = device_name(device)
    reps = 3 if args.quick else 7
    rows = []
    for n in (6000, 60_000) if args.quick else (6000, 60_000, 1_000_000):
        rows += bench_verification(n, reps, dev)
    rank_sizes = [(1000, 10_000)] if args.quick else [(1000, 10_000), (2000, 50_000)]
    for p, g in rank_sizes:
        rows += bench_rank1(p, g, 3, dev)
    rows += bench_embed(device, 3, dev, args.quick)
    out = args.out or os.path.join(
        os.path.dirname(__file__),
        "results",
        f"eval_{'cuda' if device.type == 'cuda' else 'cpu'}.csv",
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for r in rows:
            w.writerow([*r[:4], *(f"{v:.4f}" for v in r[4:8]), r[8]])
    for r in rows:
        print(f"{r[0]:13s} {r[1]:26s} {r[2]:17s} p50 {r[5]:9.2f} ms  {r[7]:12.1f} {r[8]}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
