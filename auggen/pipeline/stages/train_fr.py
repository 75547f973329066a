"""Stage ``train_fr``: the baseline FR models on D_orig, one per seed; seed 0's is M_orig."""

from __future__ import annotations

from pathlib import Path

from auggen.data.source import in_memory_if_small, resized
from auggen.pipeline.faults import fault_point
from auggen.pipeline.stage import write_json
from auggen.pipeline.stages.common import fr_config, fr_run_dir, open_data

FINISHED = "FINISHED"


def train_runs(cfg, data, out_dir: Path, variant: str, stage: str) -> None:
    """One ``train_fr`` per seed under ``out_dir/<variant>/seed<k>``; a finished one is kept."""
    from auggen.recognition.train import train_fr

    for k, seed in enumerate(cfg.seeds):
        run_dir = fr_run_dir(out_dir, variant, seed)
        if (run_dir / FINISHED).exists():
            continue
        train_fr(fr_config(cfg, seed), data, run_dir, device=cfg.device, progress=cfg.progress)
        write_json(
            run_dir / FINISHED,
            {"variant": variant, "seed": seed, "images": len(data), "classes": data.num_classes},
        )
        fault_point(stage, k)


def run(cfg, in_dirs, out_dir: Path) -> None:
    # Streamed a batch at a time; a small set (the demo) is decoded once and held.
    data = in_memory_if_small(resized(open_data(in_dirs), cfg.fr.input_size))
    train_runs(cfg, data, out_dir, "baseline", "train_fr")
