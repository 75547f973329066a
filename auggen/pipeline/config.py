"""The pipeline's configuration: one frozen dataclass per stage section, nested in one root.

The generator and FR sections are the trainers' own configs (``GenTrainConfig``,
``FRTrainConfig``), so ``--set gen.steps=2000`` or ``--set fr.augment.flip=false`` reach
them directly. Presets live in ``auggen.pipeline.presets``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from auggen.generator.train import GenTrainConfig
from auggen.infra.runtime import PRECISIONS, check_device
from auggen.mixing.choice import check_generate
from auggen.mixing.conditions import MAX_COEF
from auggen.mixing.grid import GridConfig
from auggen.recognition.train import FRTrainConfig

DATA_SOURCES = ("orl", "folder", "recordio")
VARIANTS = ("repro", "aug")  # FR models trained besides the baseline (D_orig)


@dataclass(frozen=True)
class DataConfig:
    source: str = "orl"  # orl | folder (one sub-folder per identity) | recordio (.rec/.idx)
    path: str = ""  # the folder or .rec prefix (not used for orl)
    image_size: int = 64  # real images are stored square at this size (0: keep as loaded)
    max_identities: int = 0  # 0: all; else the first N identities (label order)
    unseen_identities: int = 10  # the last N identities: verification pairs only, never trained
    # unseen_identities leaves < 2 training identities: a quarter unseen instead (false: error)
    unseen_auto: bool = True
    heldout_per_identity: int = 2  # per training identity: probes for rank-1 identification
    verification_pairs: int = 300  # pairs among the unseen identities, half genuine
    verification_bins: tuple[str, ...] = ()  # insightface .bin files (lfw.bin, cfp_fp.bin, ...)
    min_images_per_identity: int = 2  # identities with fewer images are an error ...
    drop_small_identities: bool = False  # ... unless dropped
    on_error: str = "raise"  # an unreadable image: raise | skip
    verify_images: bool = True  # decode every image once in the data stage (finds bad ones)
    workers: int = 0  # decoding processes/threads (data stage, trainers); 0: in the main one
    seed: int = 0


@dataclass(frozen=True)
class SampleConfig:
    num_steps: int = 32
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    guidance: float = 1.0
    solver: str = "heun"
    precision: str = "auto"  # auto: bf16 on CUDA and CPUs with native bf16, else fp32 | fp32 | bf16
    # Images per network call (memory, speed; not fingerprinted). 0: chosen from the GPU's
    # free memory (256 on CPU).
    batch_size: int = 256


@dataclass(frozen=True)
class ReproConfig:
    images_per_identity: int = 5  # D_repro: G(one-hot c_i) images per original identity
    shard_identities: int = 16  # identities per part (the unit of resume and of rank split)
    seed: int = 1


@dataclass(frozen=True)
class GenerateConfig:
    new_identities: int = 30  # N_new identities in D_aug
    images_per_identity: int = 8  # K images each
    alpha: float | None = None  # None: alpha* from the grid search
    beta: float | None = None
    shard_identities: int = 8  # identities per shard (the unit of resume)
    write_images: bool = True  # PNG image folder <label>/<k>.png
    write_recordio: bool = False
    leakage_threshold: float = 0.9  # flag generated images with cos >= this to a real image
    seed: int = 2
    sources: int = 2  # classes mixed per new identity: 2 (the paper) or k >= 3 (Dirichlet)
    concentration: float = 1.0  # Dirichlet concentration of the k-class weights
    # Beyond the paper (ScoreMix, arXiv 2506.10226); at their defaults in no fingerprint:
    mix: str = "condition"  # condition: G(alpha c_i + beta c_j) | score: mix D(x; c_m) outputs
    weights: tuple[float, ...] = ()  # mix=score, convex; (): 0.5/0.5, Dirichlet for k >= 3
    pairs: str = "random"  # random | far | near (M_orig centroids) | cond-far | cond-near (G)
    max_uses_per_identity: int = 0  # far/near: new identities per source class; 0: auto
    run_grid: bool = False  # mix=score: still run the (alpha, beta) grid search (reported only)


@dataclass(frozen=True)
class MixConfig:
    variants: tuple[str, ...] = VARIANTS


@dataclass(frozen=True)
class EmbedConfig:
    """How M_orig / the FR models embed images (grid, leakage audit, evaluation)."""

    batch_size: int = 128
    flip: bool = True  # sum of the embeddings of the image and its mirror


@dataclass(frozen=True)
class EvalConfig:
    nfolds: int = 10
    fars: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    min_impostors_per_far: int = 10  # report TAR@FAR only with >= this many impostors / FAR


@dataclass(frozen=True)
class ReportConfig:
    mix_examples: int = 6  # mixed identities shown beside their two sources
    images_per_example: int = 4


@dataclass(frozen=True)
class PretrainedConfig:
    """Models brought from elsewhere (auggen.pipeline.pretrained); empty: train both, as the
    paper does."""

    gen: str = ""  # a generator folder of this project or an NVlabs edm2 .pkl
    gen_mode: str = "use"  # use: G is this model, no training | init: train_gen starts from it
    fr: str = ""  # an FR model: insightface .pth, AdaFace .ckpt or this project's FR run
    fr_mode: str = "use"  # use: M_orig is this model | init: every FR training starts from it


@dataclass(frozen=True)
class PipelineConfig:
    data: DataConfig = field(default_factory=DataConfig)
    gen: GenTrainConfig = field(default_factory=GenTrainConfig)
    fr: FRTrainConfig = field(default_factory=FRTrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    repro: ReproConfig = field(default_factory=ReproConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    train_mix: MixConfig = field(default_factory=MixConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    pretrained: PretrainedConfig = field(default_factory=PretrainedConfig)
    seeds: tuple[int, ...] = (0,)  # FR training seeds (mean +- std over them)
    device: str = "cpu"  # device, threads, progress: not part of any stage's fingerprint
    threads: int = 0  # torch CPU threads; 0: torch's default
    progress: bool = True
    dist_timeout_s: float = 1800.0  # under torchrun: the longest a rank waits for the others

    def validate(self, device: bool = True) -> None:
        """Reject bad settings before any stage runs (so nothing finished is touched);
        ``device``: also check that this machine can run on ``self.device``."""

        if device:
            check_device(self.device)
        d = self.data
        if d.source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {d.source!r}")
        if d.source != "orl" and not d.path:
            raise ValueError(f"data.path is empty: data.source={d.source!r} needs --data PATH")
        if d.on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be 'raise' or 'skip', got {d.on_error!r}")
        for name in ("image_size", "max_identities", "unseen_identities", "heldout_per_identity"):
            if getattr(d, name) < 0:
                raise ValueError(f"data.{name} must be >= 0, got {getattr(d, name)}")
        if d.workers < 0:
            raise ValueError(f"data.workers must be >= 0, got {d.workers}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if d.unseen_identities == 1:
            raise ValueError(
                "data.unseen_identities must be 0 or >= 2 (verification needs impostor pairs)"
            )
        if not self.seeds:
            raise ValueError("seeds must name at least one FR training seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        self.grid.validate()
        g = self.generate
        for name in ("alpha", "beta"):
            v = getattr(g, name)
            if v is not None and not 0.0 <= v <= MAX_COEF:
                raise ValueError(f"generate.{name} must be in [0, {MAX_COEF:g}], got {v}")
        if (g.alpha is None) != (g.beta is None):
            raise ValueError("generate.alpha and generate.beta must be set together (or neither)")
        if g.sources < 2:
            raise ValueError(f"generate.sources must be >= 2, got {g.sources}")
        if g.concentration <= 0:
            raise ValueError(f"generate.concentration must be > 0, got {g.concentration}")

        check_generate(g)
        for name in ("new_identities", "images_per_identity", "shard_identities"):
            if getattr(g, name) < 1:
                raise ValueError(f"generate.{name} must be >= 1, got {getattr(g, name)}")
        if self.repro.images_per_identity < 1:
            raise ValueError(
                f"repro.images_per_identity must be >= 1, got {self.repro.images_per_identity}"
            )
        bad = [v for v in self.train_mix.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"train_mix.variants must be among {VARIANTS}, got {bad}")
        if self.repro.shard_identities < 1:
            raise ValueError(
                f"repro.shard_identities must be >= 1, got {self.repro.shard_identities}"
            )
        if self.sample.precision not in PRECISIONS:
            raise ValueError(
                f"sample.precision must be one of {PRECISIONS}, got {self.sample.precision!r}"
            )
        if self.sample.batch_size < 0:
            raise ValueError(f"sample.batch_size must be >= 0, got {self.sample.batch_size}")
        p = self.pretrained
        for name in ("gen", "fr"):
            mode, path = getattr(p, f"{name}_mode"), getattr(p, name)
            if mode not in ("use", "init"):
                raise ValueError(f"pretrained.{name}_mode must be 'use' or 'init', got {mode!r}")
            if path and not Path(path).exists():
                raise FileNotFoundError(f"pretrained.{name}: {path} does not exist")
        if self.dist_timeout_s <= 0:
            raise ValueError(f"dist_timeout_s must be > 0, got {self.dist_timeout_s}")
        if self.sample.num_steps < 1:
            raise ValueError(f"sample.num_steps must be >= 1, got {self.sample.num_steps}")
        if self.gen.resolution < 8:
            raise ValueError(f"gen.resolution must be >= 8, got {self.gen.resolution}")
