"""Stage ``train_gen``: the class-conditional EDM2 generator G on D_orig (``model/``)."""

from __future__ import annotations

from pathlib import Path

from auggen.pipeline.store import load_images


def run(cfg, in_dirs, out_dir: Path) -> None:
    from auggen.generator.train import train_generator

    data = load_images(Path(in_dirs["data"]) / "train.safetensors")
    train_generator(cfg.gen, data, out_dir / "model", device=cfg.device, progress=cfg.progress)
