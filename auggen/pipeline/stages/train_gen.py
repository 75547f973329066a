"""Stage ``train_gen``: the class-conditional EDM2 generator G on D_orig (``model/``).

With ``pretrained.gen`` set, G is that model (``gen_mode="use"``: checked and copied into
``model/``) or training starts from its weights (``"init"``).
"""

from __future__ import annotations

from pathlib import Path

from auggen.data.source import in_memory_if_small, resized
from auggen.generator.export import save_generator_safetensors
from auggen.generator.train import train_generator
from auggen.infra import runtime
from auggen.pipeline.pretrained import pretrained_generator
from auggen.pipeline.stages.common import open_data, with_data_workers


def run(cfg, in_dirs, out_dir: Path, rt: runtime.Runtime) -> None:
    init = None
    if cfg.pretrained.gen:  # a generator brought from elsewhere (pipeline.pretrained)
        classes = cfg.gen.label_dim or open_data(in_dirs).num_classes
        net = pretrained_generator(cfg, classes)
        if cfg.pretrained.gen_mode == "use":
            if rt.is_main:
                save_generator_safetensors(net, out_dir / "model")
            return
        init = net.state_dict()
    # Streamed a batch at a time; a small set (the demo) is decoded once and held.
    data = in_memory_if_small(resized(open_data(in_dirs), cfg.gen.resolution))
    train_generator(
        with_data_workers(cfg.gen, cfg),
        data,
        out_dir / "model",
        device=rt,
        progress=cfg.progress,
        init=init,
    )
