"""The AugGen stages in run order: ``STAGES[name]`` (see docs/DESIGN.md, "The pipeline")."""

from auggen.pipeline import pretrained
from auggen.pipeline.inputs import data_fingerprint
from auggen.pipeline.stage import Stage
from auggen.pipeline.stages import (
    data,
    evaluate,
    generate,
    grid,
    report,
    repro,
    train_fr,
    train_gen,
    train_mix,
)

STAGES: dict[str, Stage] = {
    "data": Stage(
        "data",
        data.run,
        (),
        ("data",),
        "load, check and split D_orig",
        inputs=lambda cfg: data_fingerprint(cfg.data),
        ranks="main",
    ),
    "train_gen": Stage(
        "train_gen",
        train_gen.run,
        ("data",),
        ("gen",),
        "train the EDM2 generator G on D_orig",
        inputs=pretrained.gen_inputs,
    ),
    "train_fr": Stage(
        "train_fr",
        train_fr.run,
        ("data",),
        ("fr", "seeds"),
        "train the baseline FR models (M_orig = first seed)",
        inputs=pretrained.fr_inputs,
    ),
    "repro": Stage(
        "repro",
        repro.run,
        ("data", "train_gen"),
        ("sample", "repro"),
        "D_repro: G with one-hot conditions",
    ),
    "grid": Stage(
        "grid",
        grid.run,
        ("data", "train_gen", "train_fr"),
        ("sample", "grid", "embed"),
        "grid search over (alpha, beta)",
        inputs=grid.inputs,  # a search skipped for generate.mix=score
    ),
    "generate": Stage(
        "generate",
        generate.run,
        ("data", "train_gen", "train_fr", "grid"),
        ("sample", "generate", "embed"),
        "D_aug: new identities + leakage audit",
    ),
    "train_mix": Stage(
        "train_mix",
        train_mix.run,
        ("data", "repro", "generate"),
        ("fr", "seeds", "train_mix"),
        "FR on D_orig + D_repro and D_orig + D_aug",
        inputs=pretrained.fr_init_inputs,
    ),
    "evaluate": Stage(
        "evaluate",
        evaluate.run,
        ("data", "train_fr", "train_mix"),
        ("embed", "eval", "seeds", "train_mix"),
        "every FR model on every benchmark",
    ),
    "report": Stage(
        "report",
        report.run,
        ("data", "train_gen", "train_fr", "repro", "grid", "generate", "train_mix", "evaluate"),
        ("report",),
        "report.md",
        ranks="main",
    ),
}
