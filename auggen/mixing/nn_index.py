"""Top-k inner-product search of many queries against a large base, exact or IVF (FAISS).

``NearestIndex(base, n_queries)`` chooses how to search before it builds anything:

- ``exact`` while ``n_queries * len(base) <= exact_limit``: brute force, ``faiss.knn`` (BLAS,
  no copy of the base) on the CPU, a FAISS ``IndexFlatIP`` on the GPU when faiss has GPUs,
  chunked float32 torch matmul on a CUDA device when only faiss-cpu is installed, and on the
  CPU when faiss is missing.
- ``ivf`` above it: ``IndexIVFFlat`` (spherical k-means coarse quantizer, nlist = 4 sqrt(N),
  the FAISS guideline, capped so every list gets >= 39 training points), searched with the
  smallest nprobe (1, 2, 3, 4, 6, 8, 11, ... up to nlist / 16) whose recall@1 against exact
  search on a sample of the caller's queries shows recall >= 0.95 at 95 % one-sided
  confidence (Wilson bound: ~0.962 seen on 1000 queries). When no nprobe up to nlist / 16
  gets there, the index searches exactly (``info["ivf_tried"]`` says what IVF reached).

Measured with ``python benchmarks/bench_leakage.py --csv benchmarks/results/leakage_cpu.csv``
on the shared 2-core AMD EPYC (faiss 1.15, D = 512, base = N unit vectors around 10,572
identity centres + noise, queries between two identities as generated faces are; other jobs
shared the CPU, so times vary up to 2x between runs). "tight": cos ~0.86 to the centre,
"loose": ~0.71.

    base           exact 10k / 100k q   IVF build, nprobe/nlist        IVF search 10k / 100k q
    0.1 M tight    17 s / 169 s*        24 s, 57/1265                  10 s / 91 s, r 0.963
    0.1 M loose    16 s / 163 s*        19 s, 79/1265 r 0.80: exact    -
    0.49 M tight   76 s / 764 s*        57 s, 2/2800                   0.6 s / 5.5 s, r 0.975
    0.49 M loose   35 s / 346 s*        51 s, 175/2800 r 0.96: exact   -

(* extrapolated from 10 k queries: exact cost is linear in the queries. r: recall@1 on the
first 10 k queries, or on the 1000-query sample where calibration fell back to exact.
IVF build includes calibration.) Memory: exact search needs the base only (N x D float32,
1 GB at 0.49 M; faiss.knn adds ~0); the IVF adds a second copy in its lists plus k-means
buffers (peak +1.25 GB at 0.49 M, +0.35 GB at 0.1 M) until the base array is dropped.

Hence the thresholds. The IVF build (k-means on 40 nlist points, 10 iterations, then
assigning N) costs as much as exact search of ~7-15 k queries at both sizes, so
``EXACT_LIMIT = 4e9`` pairs (exact ~30-70 s here) is the break-even at CASIA size (8 k
queries) and costs at most ~1 min more than IVF for smaller bases, while exact answers stay
exact. An IVF scan costs 7-12x more per pair than BLAS (loose 0.49 M at nprobe 128/2800:
100 k queries in 199 s vs 658 s exact, same run), so past nlist / 16 IVF would save < ~1/3
and is not worth the approximation. On a GPU exact fp32 matmul is ~1000x faster than this
CPU, so ``GPU_EXACT_LIMIT = 1e13``. How far IVF gets depends on how clustered the features
are (loose identities need ~100x the probes of tight ones), which is why nprobe is
calibrated on the caller's own queries rather than fixed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from auggen.mixing.search import load_faiss

EXACT_LIMIT = 4e9  # query x base pairs searched exactly on the CPU (see the docstring)
GPU_EXACT_LIMIT = 1e13
MIN_IVF_BASE = 2048  # below this exact search of any realistic query set is cheap
TARGET_RECALL = 0.95
RECALL_SAMPLE = 1000  # queries checked against exact search; s.e. of recall 0.95 ~ 0.007
MAX_PROBE_FRACTION = 1 / 16
TRAIN_PER_LIST = 40  # faiss warns below 39 training points per centroid
KMEANS_ITERS = 10
SCORE_TOL = 1e-5  # BLAS vs SIMD rounding; a tie at the top counts as found
TORCH_CHUNK_ELEMS = 1 << 27  # query-chunk x base score matrix: 512 MB of float32


def _f32(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def _check(q: np.ndarray, d: int, k: int, n: int) -> None:
    if q.ndim != 2 or q.shape[1] != d:
        raise ValueError(f"queries must be (Q, {d}), got {tuple(q.shape)}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (base size), got {k}")


def torch_knn(query, base, k: int, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products by float32 matmul, queries chunked to bound memory."""
    b = torch.as_tensor(base, device=device).float()
    q = torch.as_tensor(query).float()
    chunk = max(1, TORCH_CHUNK_ELEMS // max(1, len(b)))
    scores, idx = [], []
    # TF32 would round the inputs to 10 mantissa bits (cos off by ~1e-3): keep full fp32.
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for lo in range(0, len(q), chunk):
            s, i = (q[lo : lo + chunk].to(b.device) @ b.T).topk(k, dim=1)
            scores.append(s.cpu())
            idx.append(i.cpu())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    if not scores:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    return torch.cat(scores).numpy(), torch.cat(idx).numpy().astype(np.int64)


def recall_at_1(approx_scores, exact_scores) -> float:
    """Share of queries whose approximate best score reaches the exact best (ties count)."""
    a, e = np.asarray(approx_scores)[:, 0], np.asarray(exact_scores)[:, 0]
    return float(np.mean(a >= e - SCORE_TOL)) if len(e) else 1.0


def recall_lower_bound(recall: float, n: int, z: float = 1.645) -> float:
    """Wilson score lower bound (one-sided 95 % for z = 1.645) of a recall seen on n queries."""
    if n <= 0:
        return 0.0
    c = z * z / n
    centre = recall + c / 2
    spread = z * math.sqrt(recall * (1 - recall) / n + c / (4 * n))
    return (centre - spread) / (1 + c)


def ivf_nlist(n: int) -> int:
    """4 sqrt(N) lists (FAISS guideline), at most N / TRAIN_PER_LIST so k-means is trained."""
    return max(1, min(round(4 * math.sqrt(n)), n // TRAIN_PER_LIST))


class NearestIndex:
    """Search structure over ``base`` (N, D) for ``n_queries`` queries to come.

    ``calibration`` (queries, or a function returning them; only called when an IVF is
    built) sets nprobe and measures recall; after building an IVF the base array is dropped,
    so only the index holds the vectors. ``info`` is what leakage.json records.
    """

    def __init__(
        self,
        base,
        n_queries: int | None = None,
        *,
        exact_limit: float | None = None,
        calibration=None,
        target_recall: float = TARGET_RECALL,
        nlist: int | None = None,
        gpu: bool | None = None,
        seed: int = 0,
    ):
        base = _f32(base)
        if base.ndim != 2 or len(base) == 0:
            raise ValueError(f"base must be a non-empty (N, D) array, got {tuple(base.shape)}")
        self.n, self.dim = base.shape
        n_queries = self.n if n_queries is None else int(n_queries)
        self.faiss = load_faiss()
        cuda = torch.cuda.is_available() and gpu is not False
        faiss_gpu = (
            cuda
            and self.faiss is not None
            and hasattr(self.faiss, "StandardGpuResources")
            and self.faiss.get_num_gpus() > 0
        )
        if faiss_gpu:
            self.backend = "faiss-gpu"
        elif cuda:
            self.backend = "torch-cuda"  # faiss-cpu only: a GPU matmul beats any CPU index
        else:
            self.backend = "faiss-cpu" if self.faiss is not None else "torch-cpu"
        if exact_limit is None:
            exact_limit = (
                EXACT_LIMIT if self.backend in ("faiss-cpu", "torch-cpu") else GPU_EXACT_LIMIT
            )
        want_ivf = float(n_queries) * self.n > exact_limit and self.n >= MIN_IVF_BASE
        self.kind = "ivf" if want_ivf and self.backend.startswith("faiss") else "exact"
        self.info: dict = {"kind": self.kind, "backend": self.backend, "exact_limit": exact_limit}
        self._base, self._ivf, self._flat = base, None, None
        if self.kind == "ivf":
            self._build_ivf(nlist or ivf_nlist(self.n), seed)
            queries = calibration() if callable(calibration) else calibration
            self.calibrate(queries, target_recall)
        else:
            self._setup_exact()
            self.info.update(recall_at_1_sample=1.0, sample=0)  # exact by construction

    def _setup_exact(self) -> None:
        self.kind, self._ivf = "exact", None
        if self.backend == "faiss-gpu":
            self._flat = self._to_gpu(self.faiss.IndexFlatIP(self.dim))
            self._flat.add(self._base)
        elif self.backend == "torch-cuda":
            self._base = torch.from_numpy(self._base).cuda()

    def _to_gpu(self, index):
        self._res = self.faiss.StandardGpuResources()
        return self.faiss.index_cpu_to_gpu(self._res, 0, index)

    def _build_ivf(self, nlist: int, seed: int) -> None:
        faiss = self.faiss
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.spherical = True  # unit-norm centroids: the lists partition the sphere
        ivf.cp.niter = KMEANS_ITERS
        ivf.cp.seed = seed
        # faiss subsamples the training set to this many points per list (seeded)
        ivf.cp.max_points_per_centroid = TRAIN_PER_LIST
        if self.backend == "faiss-gpu":
            ivf = self._to_gpu(ivf)
        ivf.train(self._base)
        ivf.add(self._base)
        # Uncalibrated (no queries to measure on): the most this index may probe.
        self._nlist, self._max_probe = nlist, max(1, int(nlist * MAX_PROBE_FRACTION))
        ivf.nprobe = self._max_probe
        self._ivf = ivf
        self.info.update(nlist=nlist, nprobe=self._max_probe, recall_at_1_sample=None, sample=0)

    def calibrate(self, queries, target_recall: float = TARGET_RECALL) -> dict:
        """Smallest nprobe (steps of ~1.4x) whose recall@1 on ``queries`` shows, at 95 %
        one-sided confidence, a recall >= target; exact search when none up to nlist / 16.

        Needs the base array (the constructor calls it before dropping the base)."""
        if self._base is None or self._ivf is None:
            raise RuntimeError("calibrate() runs while an IVF index is being built")
        if queries is None or len(queries) == 0:
            self._base = None  # nothing to measure on; nprobe stays at its maximum
            return self.info
        q = _f32(queries)
        _check(q, self.dim, 1, self.n)
        exact = self._exact(q, 1)[0]
        max_probe, nprobe = self._max_probe, 1
        while True:
            self._ivf.nprobe = nprobe
            recall = recall_at_1(self._ivf.search(q, 1)[0], exact)
            # The sample's recall itself would land below the target about half the time.
            ok = recall_lower_bound(recall, len(q)) >= target_recall
            if ok or nprobe >= max_probe:
                break
            nprobe = min(max(nprobe + 1, round(nprobe * 1.4)), max_probe)
        self.info.update(nprobe=nprobe, recall_at_1_sample=recall, sample=len(q))
        if not ok:
            # Reaching the target would scan more than nlist / 16 of the base: not faster.
            tried = {"nlist": self.info.pop("nlist"), "nprobe": self.info.pop("nprobe")}
            self.info.update(
                kind="exact", recall_at_1_sample=1.0, ivf_tried={**tried, "recall_at_1": recall}
            )
            self._setup_exact()
            return self.info
        self._base = None
        return self.info

    def _exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._flat is not None:
            return self._flat.search(q, k)
        if self.faiss is not None and isinstance(self._base, np.ndarray):
            # faiss.knn searches the array in place (an IndexFlatIP would copy it)
            return self.faiss.knn(q, self._base, k, self.faiss.METRIC_INNER_PRODUCT)
        return torch_knn(q, self._base, k)

    def search(self, query, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 (Q, k), indices int64 (Q, k)), best first."""
        q = _f32(query)
        _check(q, self.dim, k, self.n)
        if len(q) == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        if self.kind == "exact":
            scores, idx = self._exact(q, k)
            return scores, idx.astype(np.int64)
        scores, idx = self._ivf.search(q, k)
        missing = (idx < 0).any(axis=1)
        if missing.any():
            # Fewer than k vectors in the probed lists: probe them all for those rows.
            nprobe, self._ivf.nprobe = self._ivf.nprobe, self._nlist
            scores[missing], idx[missing] = self._ivf.search(q[missing], k)
            self._ivf.nprobe = nprobe
        return scores, idx.astype(np.int64)


def nearest(
    query,
    base,
    k: int = 1,
    exact_limit: float | None = None,
    *,
    sample: int = RECALL_SAMPLE,
    target_recall: float = TARGET_RECALL,
    seed: int = 0,
    **index_kw,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Top-``k`` inner products of ``query`` (Q, D) rows against ``base`` (N, D) rows.

    Exact while ``Q * N <= exact_limit``, IVF above it with nprobe calibrated on ``sample``
    random query rows. Returns (scores float32 (Q, k), indices int64 (Q, k), info), where
    info is ``{"kind", "backend", "recall_at_1_sample", "sample", ...}``.
    """
    q = _f32(query)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(q), min(sample, len(q)), replace=False))
    index = NearestIndex(
        base,
        len(q),
        exact_limit=exact_limit,
        calibration=lambda: q[pick],
        target_recall=target_recall,
        seed=seed,
        **index_kw,
    )
    scores, idx = index.search(q, k)
    return scores, idx, index.info
