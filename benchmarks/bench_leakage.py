"""Benchmark the leakage audit's nearest-real-image search: exact vs IVF, time and memory.

The base stands in for CASIA's real embeddings: N unit vectors (D = 512) around 10,572
identity centres (``noise`` sets how tight: cos to the centre ~ 1/sqrt(1 + noise^2), 0.86
for 0.6, 0.71 for 1.0); the queries stand in for generated faces, each between two
identities. For each base size and query count it times

- ``exact``: ``faiss.knn`` (BLAS). Above ``--max-exact-queries`` its time is extrapolated
  linearly from that many queries (exact cost is linear in the queries), marked in ``note``.
- ``ivf``: ``NearestIndex`` as the audit builds it (k-means, add, nprobe calibration on 1000
  queries; ``build_s``) then the search of all queries (``search_s``), with recall@1 against
  the exact answers of the first ``--max-exact-queries`` queries. When calibration cannot
  reach 0.95 within nlist / 16 the index falls back to exact (``kind`` says so).

``peak_mb``: the process's peak RSS above what it held before (base and queries included
in neither), from /proc (VmHWM after clear_refs). ``--device cuda`` adds the GPU exact path.

    python benchmarks/bench_leakage.py [--quick] [--csv benchmarks/results/leakage_cpu.csv]
"""

import argparse
import csv
import os
import sys
import time

import numpy as np
import torch

from auggen.mixing.nn_index import NearestIndex, recall_at_1, recall_lower_bound, torch_knn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import device_name  # noqa: E402

FIELDS = [
    "base",
    "queries",
    "dim",
    "noise",
    "kind",
    "backend",
    "device",
    "nlist",
    "nprobe",
    "build_s",
    "search_s",
    "total_s",
    "queries_per_s",
    "recall_at_1",
    "peak_mb",
    "note",
]
CENTRES = 10572  # CASIA-WebFace identities


def _unit(x):
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def clustered(n, n_query, dim, noise, seed=0):
    rng = np.random.default_rng(seed)
    c = _unit(rng.standard_normal((CENTRES, dim), dtype=np.float32))
    base = c[rng.integers(0, CENTRES, n)]
    base += rng.standard_normal((n, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
    pair = rng.integers(0, CENTRES, (n_query, 2))
    query = _unit(c[pair[:, 0]] + c[pair[:, 1]])
    query += rng.standard_normal((n_query, dim), dtype=np.float32) * np.float32(
        noise / np.sqrt(dim)
    )
    return _unit(base), _unit(query)


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> float:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass
    return _rss_mb("VmRSS")


def _row(n, q, dim, noise, kind, backend, dev, build, search, recall, peak, note="", ivf=None):
    ivf = ivf or {}
    total = build + search
    return {
        "base": n,
        "queries": q,
        "dim": dim,
        "noise": noise,
        "kind": kind,
        "backend": backend,
        "device": dev,
        "nlist": ivf.get("nlist", ""),
        "nprobe": ivf.get("nprobe", ""),
        "build_s": round(build, 2),
        "search_s": round(search, 2),
        "total_s": round(total, 2),
        "queries_per_s": round(q / total, 1),
        "recall_at_1": "" if recall is None else round(recall, 4),
        "peak_mb": round(peak),
        "note": note,
    }


def bench_base(n, query_counts, dim, noise, max_exact, device):
    print(f"base {n} x {dim}, noise {noise}: generating", flush=True)
    base, query = clustered(n, max(query_counts), dim, noise)
    cpu = device_name("cpu")
    rows = []
    m = min(max_exact, max(query_counts))
    before = _reset_peak()
    t0 = time.perf_counter()
    exact_s = NearestIndex(base, m, exact_limit=float("inf"), gpu=False).search(query[:m])[0]
    t_exact = time.perf_counter() - t0
    peak = _rss_mb("VmHWM") - before
    for q in query_counts:
        note = "" if q <= m else f"extrapolated from {m} queries"
        rows.append(
            _row(n, q, dim, noise, "exact", "faiss-cpu", cpu, 0, t_exact * q / m, 1.0, peak, note)
        )
        print(rows[-1], flush=True)
    # One index for all query counts, calibrated on 1000 of the first queries, as the audit does.
    before = _reset_peak()
    t0 = time.perf_counter()
    pick = np.sort(np.random.default_rng(0).choice(m, min(1000, m), replace=False))
    index = NearestIndex(base, max(query_counts), exact_limit=0, calibration=query[pick], gpu=False)
    build = time.perf_counter() - t0
    info = index.info
    for q in query_counts:
        if index.kind == "exact":  # the fall-back: the same search as the exact rows above
            t = info["ivf_tried"]
            bound = recall_lower_bound(t["recall_at_1"], info["sample"])
            note = (
                f"IVF nprobe {t['nprobe']}/{t['nlist']}: sample recall {t['recall_at_1']:.3f}, "
                f"95% bound {bound:.3f} < 0.95: searched exactly (search_s as the exact row)"
            )
            search, recall = t_exact * q / m, 1.0
        else:
            t0 = time.perf_counter()
            scores = index.search(query[:q])[0]
            search = time.perf_counter() - t0
            recall = recall_at_1(scores[:m], exact_s[:m])
            note = (
                f"recall on the first {min(q, m)} queries; sample {info['recall_at_1_sample']:.3f}"
            )
        peak = _rss_mb("VmHWM") - before
        rows.append(
            _row(
                n,
                q,
                dim,
                noise,
                index.kind,
                "faiss-cpu",
                cpu,
                build,
                search,
                recall,
                peak,
                note,
                info,
            )
        )
        print(rows[-1], flush=True)
    del index
    if device.startswith("cuda") and torch.cuda.is_available():
        gb = torch.from_numpy(base).to(device)
        for q in query_counts:
            torch_knn(query[:1000], gb, 1)  # warm-up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            s = torch_knn(query[:q], gb, 1)[0]
            torch.cuda.synchronize()
            t = time.perf_counter() - t0
            recall = recall_at_1(s[:m], exact_s[:m])
            peak = torch.cuda.max_memory_allocated() / 2**20
            dev = device_name(device)
            rows.append(
                _row(n, q, dim, noise, "exact", "torch-cuda", dev, 0, t, recall, peak, "GPU MB")
            )
            print(rows[-1], flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--csv", default=None)
    p.add_argument("--quick", action="store_true", help="20 k base, 2 k queries")
    p.add_argument("--bases", type=int, nargs="+", default=[100_000, 490_000])
    p.add_argument("--queries", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--noise", type=float, nargs="+", default=[0.6, 1.0])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--max-exact-queries", type=int, default=10_000)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.quick:
        a.bases, a.queries, a.noise = [20_000], [2_000], [0.6]
    rows = []
    for n in a.bases:
        for noise in a.noise:
            rows += bench_base(n, a.queries, a.dim, noise, a.max_exact_queries, a.device)
    if a.csv:
        os.makedirs(os.path.dirname(os.path.abspath(a.csv)), exist_ok=True)
        with open(a.csv + ".tmp", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
        os.replace(a.csv + ".tmp", a.csv)


if __name__ == "__main__":
    main()
