"""Stage ``train_mix``: FR models on D_orig + D_repro (control) and D_orig + D_aug, per seed.

Real and generated images are brought to the FR input size before they are joined; D_aug's
labels already follow the original ones, D_repro's are the original labels.
"""

from __future__ import annotations

from auggen.data.index import open_index
from auggen.data.source import ConcatSource, in_memory_if_small, resized
from auggen.pipeline.stages.common import open_data
from auggen.pipeline.stages.train_fr import train_runs

SOURCES = {"repro": ("repro", "repro.index.json"), "aug": ("generate", "aug.index.json")}


def mixed_data(cfg, in_dirs, variant: str):
    """D_orig followed by the generated set: a view over both, at the FR input size."""
    size = cfg.fr.input_size
    real = resized(open_data(in_dirs), size)
    stage, name = SOURCES[variant]
    extra = resized(open_index(in_dirs[stage] / name), size)
    both = ConcatSource([real, extra], max(real.num_classes, extra.num_classes))
    return in_memory_if_small(both)  # a small set (the demo) is decoded once and held


def run(cfg, in_dirs, out_dir, rt) -> None:
    for variant in cfg.train_mix.variants:
        train_runs(cfg, mixed_data(cfg, in_dirs, variant), out_dir, variant, "train_mix", rt)
