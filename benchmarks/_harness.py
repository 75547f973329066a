"""Timing harness shared by the benchmark scripts.

``time_fn`` warms up, then times ``repeats`` calls (CUDA-synchronised) and reports the
p20/p50/p80 in milliseconds; ``make_row`` turns a timing into a CSV row that names the op,
shape, dtype, backend and device, with GB/s from the bytes the op must move.
Scripts add ``--csv`` and ``--quick`` with ``add_common_args`` and write with ``write_csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

FIELDS = [
    "op",
    "shape",
    "dtype",
    "backend",
    "device",
    "ms_p20",
    "ms_p50",
    "ms_p80",
    "gbps",
    "speedup_vs_eager",
]


@dataclass(frozen=True)
class Timing:
    p20: float
    p50: float
    p80: float


def device_name(device: str | torch.device) -> str:
    """A readable name of the device, e.g. 'NVIDIA H100 80GB HBM3' or the CPU model."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], object], device: str | torch.device = "cpu", warmup: int = 3, repeats: int = 20
) -> Timing:
    """Percentiles (ms) of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    q = torch.tensor(times, dtype=torch.float64).quantile(torch.tensor([0.2, 0.5, 0.8]).double())
    return Timing(*(float(v) for v in q))


def make_row(
    op: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    backend: str,
    device: str | torch.device,
    timing: Timing,
    nbytes: int,
    eager_ms: float | None = None,
) -> dict:
    """One CSV row; ``nbytes`` is the memory traffic the op needs (reads + writes)."""
    return {
        "op": op,
        "shape": "x".join(str(s) for s in shape),
        "dtype": str(dtype).replace("torch.", ""),
        "backend": backend,
        "device": device_name(device),
        "ms_p20": round(timing.p20, 4),
        "ms_p50": round(timing.p50, 4),
        "ms_p80": round(timing.p80, 4),
        "gbps": round(nbytes / (timing.p50 * 1e-3) / 1e9, 2),
        "speedup_vs_eager": "" if eager_ms is None else round(eager_ms / timing.p50, 2),
    }


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--csv", default=None, help="write the rows to this CSV path")
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row")
    return parser


def print_row(row: dict) -> None:
    print(
        f"{row['op']:<28} {row['shape']:<16} {row['dtype']:<9} {row['backend']:<10} "
        f"p50 {row['ms_p50']:>9.3f} ms  {row['gbps']:>7.2f} GB/s  x{row['speedup_vs_eager']}",
        flush=True,
    )


def append_csv(path, fields, rows) -> None:
    """Append ``rows`` (dicts keyed by ``fields``, or sequences in their order) to the CSV at
    ``path``, writing the header first when the file is new."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        if new:
            csv.writer(f).writerow(fields)
        for row in rows:
            if isinstance(row, dict):
                row = [row.get(k, "") for k in fields]
            csv.writer(f).writerow(row)


def write_csv(path: str | None, rows: list[dict]) -> None:
    """Writes ``rows`` (atomic replace) when a path was given."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
