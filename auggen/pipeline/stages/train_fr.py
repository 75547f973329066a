"""Stage ``train_fr``: the baseline FR models on D_orig, one per seed; seed 0's is M_orig.

Under torchrun every rank trains each seed together (DDP); rank 0 writes the outputs.
"""

from __future__ import annotations

from pathlib import Path

from auggen.data.source import in_memory_if_small, resized
from auggen.infra import runtime
from auggen.infra.faults import fault_point
from auggen.pipeline.pretrained import fr_init
from auggen.pipeline.stage import write_json
from auggen.pipeline.stages.common import fr_config, fr_run_dir, open_data
from auggen.recognition.train import train_fr

FINISHED = "FINISHED"


def train_runs(cfg, data, out_dir: Path, variant: str, stage: str, rt: runtime.Runtime) -> None:
    """One ``train_fr`` per seed under ``out_dir/<variant>/seed<k>``; a finished one is kept.

    With ``pretrained.fr`` in ``init`` mode every run starts from its backbone weights."""

    init = fr_init(cfg)

    for k, seed in enumerate(cfg.seeds):
        run_dir = fr_run_dir(out_dir, variant, seed)
        # Rank 0 looks: a FINISHED written between two ranks' looks must not split them.
        if runtime.broadcast_object((run_dir / FINISHED).exists(), f"{variant} seed {seed}", rt):
            continue
        # Every rank trains the seed together (DDP, the global batch split across ranks).
        train_fr(fr_config(cfg, seed), data, run_dir, device=rt, progress=cfg.progress, init=init)
        if rt.is_main:
            write_json(
                run_dir / FINISHED,
                {
                    "variant": variant,
                    "seed": seed,
                    "images": len(data),
                    "classes": data.num_classes,
                },
            )
        fault_point(stage, k)


def run(cfg, in_dirs, out_dir: Path, rt: runtime.Runtime) -> None:
    # Streamed a batch at a time; a small set (the demo) is decoded once and held.
    data = in_memory_if_small(resized(open_data(in_dirs), cfg.fr.input_size))
    train_runs(cfg, data, out_dir, "baseline", "train_fr", rt)
