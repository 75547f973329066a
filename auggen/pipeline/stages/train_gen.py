"""Stage ``train_gen``: the class-conditional EDM2 generator G on D_orig (``model/``)."""

from __future__ import annotations

from pathlib import Path

from auggen.pipeline.stages.common import open_data


def run(cfg, in_dirs, out_dir: Path) -> None:
    from auggen.generator.train import train_generator

    data = open_data(in_dirs).to_images()
    train_generator(cfg.gen, data, out_dir / "model", device=cfg.device, progress=cfg.progress)
