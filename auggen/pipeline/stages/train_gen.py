"""Stage ``train_gen``: the class-conditional EDM2 generator G on D_orig (``model/``)."""

from __future__ import annotations

from pathlib import Path

from auggen.data.source import in_memory_if_small, resized
from auggen.pipeline.stages.common import open_data, with_data_workers


def run(cfg, in_dirs, out_dir: Path) -> None:
    from auggen.generator.train import train_generator

    # Streamed a batch at a time; a small set (the demo) is decoded once and held.
    data = in_memory_if_small(resized(open_data(in_dirs), cfg.gen.resolution))
    train_generator(
        with_data_workers(cfg.gen, cfg),
        data,
        out_dir / "model",
        device=cfg.device,
        progress=cfg.progress,
    )
