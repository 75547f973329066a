"""Stage times of a pipeline run, grid-search time per (alpha, beta) cell, sampling images/s.

Runs the preset (default: orl-tiny, the 20-minute CPU demo) unless ``--reuse`` points at a
finished run, then reads the ``timing.json`` / ``stats.json`` every stage wrote and appends
CSV rows naming the device to benchmarks/results/pipeline_<device>.csv.

    python benchmarks/bench_pipeline.py                      # run orl-tiny, then record
    python benchmarks/bench_pipeline.py --reuse runs/orl-tiny  # record an existing run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from auggen.pipeline.driver import run_pipeline
from auggen.pipeline.overrides import apply_set
from auggen.pipeline.presets import PRESETS
from auggen.pipeline.stages import STAGES

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import append_csv  # noqa: E402

FIELDS = ("date", "device", "threads", "preset", "item", "value", "unit", "note")


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or 'cpu'} x{os.cpu_count()} cores"


def collect(run_dir: Path) -> list[tuple[str, float, str, str]]:
    """(item, value, unit, note) rows from a run folder."""
    rows = []
    total = 0.0
    for name in STAGES:
        p = run_dir / name / "timing.json"
        if p.exists():
            t = json.loads(p.read_text())
            total += t["wall_s_all_attempts"]
            note = "resumed" if t.get("resumed") else ""
            rows.append((f"stage:{name}", round(t["wall_s_all_attempts"], 2), "s", note))
    rows.append(("total", round(total, 2), "s", "all stages"))
    grid = run_dir / "grid" / "stats.json"
    if grid.exists():
        g = json.loads(grid.read_text())
        steps = f"{g['sampler_steps']} Heun steps"
        if g.get("s_per_cell"):
            rows.append(
                (
                    "grid:s_per_cell",
                    round(g["s_per_cell"], 3),
                    "s/cell",
                    f"{g['cells']} cells, {g['images'] // g['cells']} images per cell",
                )
            )
        if g.get("images_per_s"):
            rows.append(("grid:sample_images_per_s", round(g["images_per_s"], 3), "img/s", steps))
    gen = run_dir / "generate" / "stats.json"
    if gen.exists():
        g = json.loads(gen.read_text())
        if g.get("images_per_s"):
            rows.append(
                (
                    "generate:images_per_s",
                    round(g["images_per_s"], 3),
                    "img/s",
                    f"{g['images']} images, {g['sampler_steps']} Heun steps",
                )
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="orl-tiny", choices=list(PRESETS))
    p.add_argument("--out", help="run folder (default runs/bench-<preset>)")
    p.add_argument("--reuse", help="record this finished run folder instead of running")
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--csv", default=None, help="default benchmarks/results/pipeline_<dev>.csv")
    args = p.parse_args()
    cfg = PRESETS[args.preset]
    for s in args.set:
        cfg = apply_set(cfg, s)
    cfg = replace(cfg, threads=args.threads, device=args.device or cfg.device)
    load_before = round(os.getloadavg()[0], 2)  # the machine may be shared: say how busy it was
    if args.reuse:
        run_dir = Path(args.reuse)
    else:
        run_dir = Path(args.out or f"runs/bench-{args.preset}")
        run_pipeline(cfg, run_dir, STAGES)
    load_after = round(os.getloadavg()[0], 2)
    device, threads = cfg.device, args.threads or torch.get_num_threads()
    if (run_dir / "data" / "timing.json").exists():
        first = json.loads((run_dir / "data" / "timing.json").read_text())
        device, threads = first["device"], first.get("threads", threads)
    kind = "cpu" if device == "cpu" else "cuda"
    out = Path(args.csv or Path(__file__).parent / "results" / f"pipeline_{kind}.csv")
    date, rows = time.strftime("%Y-%m-%dT%H:%M:%S"), []
    loads = [("load_avg_1min_start", load_before, "", "os.getloadavg"),
             ("load_avg_1min_end", load_after, "", "os.getloadavg")]  # fmt: skip
    for item, value, unit, note in collect(run_dir) + loads:
        rows.append([date, device_name(device), threads, args.preset, item, value, unit, note])
        print(f"{item:32s} {value:>10} {unit:6s} {note}")
    append_csv(out, FIELDS, rows)
    print(f"rows appended to {out}")


if __name__ == "__main__":
    main()
