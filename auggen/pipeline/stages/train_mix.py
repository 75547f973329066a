"""Stage ``train_mix``: FR models on D_orig + D_repro (control) and D_orig + D_aug, per seed.

Real and generated images are brought to the FR input size before they are joined; D_aug's
labels already follow the original ones, D_repro's are the original labels.
"""

from __future__ import annotations

from auggen.pipeline.stages.common import train_data_at
from auggen.pipeline.stages.train_fr import train_runs
from auggen.pipeline.store import concat, load_images

SOURCES = {"repro": ("repro", "repro.safetensors"), "aug": ("generate", "aug.safetensors")}


def mixed_data(cfg, in_dirs, variant: str):
    size = cfg.fr.input_size
    real = train_data_at(load_images(in_dirs["data"] / "train.safetensors"), size)
    stage, name = SOURCES[variant]
    extra = train_data_at(load_images(in_dirs[stage] / name), size)
    return concat([real, extra], max(real.num_classes, extra.num_classes))


def run(cfg, in_dirs, out_dir) -> None:
    for variant in cfg.train_mix.variants:
        train_runs(cfg, mixed_data(cfg, in_dirs, variant), out_dir, variant, "train_mix")
