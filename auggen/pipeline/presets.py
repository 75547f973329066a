"""Named pipeline configs: ``PRESETS[name]`` (see ``python -m auggen.pipeline --help``).

- ``orl-tiny`` (default): the whole method on the bundled ORL faces on a 2-core CPU in
  under 20 minutes: 32 px generator (~1.2 M params, 800 steps of 32), narrow IR18 at 32 px,
  12 Heun steps, a coarse 4 x 4 grid instead of the paper's 11 x 11, two FR seeds.
  Measured: 272 s with 2 threads on an idle 2-core Xeon with AMX (train_gen 175 s in bf16,
  the CPU precision policy); 589 s on a 2-core EPYC VM in fp32; see
  benchmarks/results/pipeline_cpu.csv.
- ``orl-quality``: ``orl-tiny`` over 40 FR seeds (D_orig + D_aug), enough to resolve the
  ~1.5-point gain the effect study measured on ORL; about 30-40 minutes with 2 threads.
- ``micro``: every stage in about a minute (tests): 16 px, a few identities, few steps.
- ``casia-ir50``: paper scale (GPU): CASIA-WebFace from ``--data`` (RecordIO prefix or image
  folder), EDM2-S generator at 112 px, IR50 + AdaFace, the paper's 0.1 ... 1.1 grid, and
  the verification .bin files given with ``--set data.verification_bins=[...]``.

Generator disk (params x bytes x copies; checkpoints hold net + 2 EMAs + Adam's 2 moments = 5
fp32 copies, ``keep_checkpoints`` = 2 of them, a third while one is written; snapshots hold
the 2 EMA profiles, ``snapshot_dtype`` bf16 = 2 bytes):

- ``orl-tiny``: 1.20 M params (30 ids): checkpoints 2 x 24 MB; no snapshots.
- ``micro``: 0.28 M params (6 ids): checkpoints 2 x 5.7 MB; no snapshots.
- ``casia-ir50``: 287.6 M params (10,572 ids): checkpoints 2 x 5.75 GB (17.3 GB peak);
  snapshots 287.6 M x 2 B x 50 (every 4000 of 200k steps, max_snapshots=50) x 2 profiles =
  57.5 GB (was 230 GB: fp32, every 2000 steps).
"""

from __future__ import annotations

from dataclasses import replace

from auggen.generator.train import GenTrainConfig
from auggen.mixing.grid import PAPER_GRID, GridConfig
from auggen.pipeline.config import (
    DataConfig,
    EmbedConfig,
    EvalConfig,
    GenerateConfig,
    MixConfig,
    PipelineConfig,
    ReportConfig,
    ReproConfig,
    SampleConfig,
)
from auggen.recognition.augment import AugmentConfig
from auggen.recognition.train import PRESETS as FR_PRESETS
from auggen.recognition.train import FRTrainConfig

_ORL_FR = FR_PRESETS["orl-tiny"]  # IR18, width 16, 32 px, AdaFace, 20 epochs (cosine)

ORL_TINY = PipelineConfig(
    data=DataConfig(
        source="orl",
        image_size=64,
        unseen_identities=10,
        heldout_per_identity=2,
        verification_pairs=400,
    ),
    gen=GenTrainConfig(
        preset="tiny",
        resolution=32,
        batch_size=32,
        steps=800,
        lr=0.01,
        lr_ref_steps=2000,
        checkpoint_every=100,
        log_every=25,
    ),
    fr=_ORL_FR,
    sample=SampleConfig(num_steps=12, batch_size=128),
    repro=ReproConfig(images_per_identity=4),
    grid=GridConfig(
        alphas=(0.2, 0.5, 0.8, 1.1), betas=(0.2, 0.5, 0.8, 1.1), pairs=3, samples_per_cell=4
    ),
    generate=GenerateConfig(new_identities=30, images_per_identity=8, shard_identities=5),
    seeds=(0, 1),
)

MICRO = PipelineConfig(
    data=DataConfig(
        source="orl",
        image_size=32,
        max_identities=8,
        unseen_identities=2,
        heldout_per_identity=2,
        verification_pairs=40,
    ),
    gen=GenTrainConfig(
        preset="micro",
        resolution=16,
        batch_size=16,
        steps=24,
        lr=0.01,
        checkpoint_every=8,
        log_every=4,
    ),
    fr=replace(
        _ORL_FR,
        width=8,
        input_size=16,
        embedding_size=32,
        batch_size=16,
        epochs=2,
        warmup_epochs=0,
        checkpoint_every=1,
        augment=AugmentConfig(crop_prob=0.0, lowres_prob=0.0, photometric_prob=0.0),
    ),
    sample=SampleConfig(num_steps=3, batch_size=64),
    repro=ReproConfig(images_per_identity=2),
    grid=GridConfig(alphas=(0.5, 1.0), betas=(0.5, 1.0), pairs=2, samples_per_cell=2),
    generate=GenerateConfig(new_identities=4, images_per_identity=3, shard_identities=2),
    embed=EmbedConfig(batch_size=64),
    eval=EvalConfig(fars=(1e-1,), min_impostors_per_far=1),
    report=ReportConfig(mix_examples=3, images_per_example=3),
    seeds=(0,),
    progress=False,
)

CASIA_IR50 = PipelineConfig(
    data=DataConfig(
        source="recordio",
        path="",
        image_size=112,
        unseen_identities=0,
        heldout_per_identity=0,
        min_images_per_identity=2,
        drop_small_identities=True,
        workers=8,  # JPEG decode + augmentation off the training process (see README)
    ),
    gen=GenTrainConfig(
        preset="edm2-img64-s",
        resolution=112,
        batch_size=256,
        steps=200_000,
        lr=0.010,
        lr_ref_steps=35_000,
        checkpoint_every=2000,
        log_every=100,
        snapshot_every=4000,  # 50 snapshots span the run: post-hoc EMA of any std
        snapshot_dtype="bfloat16",
        max_snapshots=50,
        num_workers=4,  # JPEG decoding of 256 images per step off the training process
    ),
    # IR50 + AdaFace, 112 px, 26 epochs (the paper's recipe), global batch 512 (64 per GPU on
    # 8); a checkpoint every 2,000 steps so that a killed job loses minutes, not an epoch;
    # channels-last convolutions (bf16 tensor cores prefer NHWC)
    fr=FRTrainConfig(checkpoint_every_steps=2000, channels_last=True),
    # bf16 autocast on the GPU (precision "auto"); images per call from the GPU's free memory
    sample=SampleConfig(num_steps=32, batch_size=0),
    repro=ReproConfig(images_per_identity=20),
    grid=GridConfig(alphas=PAPER_GRID, betas=PAPER_GRID, pairs=16, samples_per_cell=16),
    generate=GenerateConfig(
        new_identities=10_000, images_per_identity=50, shard_identities=100, write_recordio=True
    ),
    embed=EmbedConfig(batch_size=512),
    eval=EvalConfig(fars=(1e-4, 1e-3, 1e-2)),
    seeds=(0,),
    device="cuda",
)

# orl-tiny measured over 40 FR seeds, where the effect study (benchmarks/study_effect.py)
# resolved AugGen's gain on ORL: +1.31 points over seeds 0-19 (95 % CI -0.10 ... +2.73), then
# +1.79 (+0.36 ... +3.21) on fresh seeds 20-39. Same method and data; only the seeds differ.
# D_orig + D_aug only: the D_repro control (+40 trainings) is one --set away.
ORL_QUALITY = replace(ORL_TINY, seeds=tuple(range(40)), train_mix=MixConfig(variants=("aug",)))

PRESETS: dict[str, PipelineConfig] = {
    "orl-tiny": ORL_TINY,
    "orl-quality": ORL_QUALITY,
    "micro": MICRO,
    "casia-ir50": CASIA_IR50,
}
DEFAULT_PRESET = "orl-tiny"
