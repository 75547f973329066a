"""Train the EDM2 generator on a :class:`LabeledImages` set or an :class:`ImageSource`
(EDM2 ``training_loop.py`` recipe).

Adam (0.9, 0.99), inverse-square-root LR decay after ``lr_ref_steps``, uncertainty-weighted
loss with log-normal noise levels, power-function EMAs, atomic safetensors + JSON checkpoints
and exact resume: every step draws its batch, flips, noise levels and noise from generators
seeded by ``(seed, step)``, so n steps + resume + n steps equals 2n steps. Images are read,
resized and flipped a batch at a time (``auggen.generator.data``), in ``num_workers``
DataLoader workers when set, so a dataset never has to fit in memory. Runs under
``torchrun`` (DDP; each rank takes a slice of the same global batch). A non-finite or exploding
loss stops the run with ``TrainingDiverged`` (``auggen.infra.training_guard``) before that step's
update, so no checkpoint, snapshot or history holds anything from it. Optional, from rank 0:
TensorBoard events in ``tensorboard/`` (loss, lr, img/s, gradient norm) and a grid of EMA
samples with fixed seeds and classes every ``sample_grid_every`` steps in ``samples/``. The
loop itself (resume, checkpoints, the guard, logging, DDP, progress) is
``auggen.infra.training_loop``; this module says what a step and a checkpoint are.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from auggen.data.loader import step_loader, training_source
from auggen.data.source import ImageSource
from auggen.data.types import LabeledImages
from auggen.generator.checkpoint import (
    STATE_JSON,
    join_optimizer_state,
    load_checkpoint,
    save_checkpoint,
    save_snapshot,
    split_optimizer_state,
)
from auggen.generator.data import GenStepBatches, prepare_images, step_randomness  # noqa: F401
from auggen.generator.ema import SNAPSHOT_DTYPES, PowerFunctionEMA
from auggen.generator.loading import (  # noqa: F401  (load_generator: public re-export)
    FORMAT,
    load_generator,
    load_weights,
)
from auggen.generator.presets import PRESETS, build_unet
from auggen.generator.sample_grid import save_sample_grid
from auggen.generator.unet import Precond
from auggen.infra import runtime, training_loop
from auggen.infra.files import atomic_write_bytes, atomic_write_json
from auggen.infra.training_log import grad_norm


@dataclass(frozen=True)
class GenTrainConfig:
    preset: str = "tiny"
    resolution: int = 32
    label_dim: int | None = None  # None: data.num_classes
    batch_size: int = 32  # global, over all ranks (each takes batch_size / world_size)
    steps: int = 1000
    total_kimg: float | None = None  # overrides steps when set
    lr: float = 0.01
    lr_ref_steps: int = 2000  # lr / sqrt(step / ref) after this many steps
    lr_rampup_steps: int = 50
    adam_betas: tuple[float, float] = (0.9, 0.99)
    adam_eps: float = 1e-8
    p_mean: float = -0.8
    p_std: float = 1.6
    sigma_data: float = 0.5
    dropout: float | None = None  # None: the preset's
    ema_stds: tuple[float, ...] = (0.050, 0.100)
    xflip: bool = True
    precision: str = "auto"  # auto: bf16 on CUDA and CPUs with native bf16, else fp32 | fp32 | bf16
    compile: bool = False
    log_every: int = 10
    checkpoint_every: int = 500
    snapshot_every: int = 0  # EMA snapshots for post-hoc EMA; 0 = off
    # Snapshot weights are stored in this dtype (bf16 halves the disk of fp32; the post-hoc
    # average is computed in fp32 or better either way); buffers keep their own dtype.
    snapshot_dtype: str = "bfloat16"
    # Keep only the newest this many snapshots (0: all). Post-hoc EMA can then only rebuild
    # profiles that the kept window spans: cover the whole run for wide stds.
    max_snapshots: int = 0
    num_workers: int = 0  # DataLoader processes that read + prepare step batches; 0: main one
    keep_checkpoints: int = 2
    seed: int = 0
    # Stop when a step's loss is non-finite or above median + this x max(|median|, 1) of the
    # last 50 losses (auggen.infra.training_guard); 0: never stop.
    divergence_factor: float = 100.0
    overrides: dict = field(default_factory=dict)  # extra build_unet kwargs
    tensorboard: bool = False  # rank 0 writes TensorBoard events to out_dir/tensorboard
    sample_grid_every: int = 0  # EMA samples (fixed seeds, classes) to samples/; 0 = off

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        for name in ("resolution", "batch_size", "log_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.total_kimg is None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.precision not in runtime.PRECISIONS:
            raise ValueError(
                f"precision must be one of {runtime.PRECISIONS}, got {self.precision!r}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.divergence_factor >= 0:
            raise ValueError(f"divergence_factor must be >= 0, got {self.divergence_factor}")
        for name in ("snapshot_every", "max_snapshots", "num_workers", "sample_grid_every"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.snapshot_dtype not in SNAPSHOT_DTYPES:
            raise ValueError(
                f"snapshot_dtype must be one of {sorted(SNAPSHOT_DTYPES)}, got "
                f"{self.snapshot_dtype!r}"
            )

    @property
    def total_steps(self) -> int:
        if self.total_kimg is not None:
            return max(1, math.ceil(self.total_kimg * 1000 / self.batch_size))
        return int(self.steps)

    def learning_rate(self, step: int) -> float:
        """EDM2 schedule: ref_lr / sqrt(max(t / t_ref, 1)), times a linear warm-up."""
        lr = self.lr / math.sqrt(max(step / max(self.lr_ref_steps, 1), 1.0))
        if self.lr_rampup_steps > 0:
            lr *= min((step + 1) / self.lr_rampup_steps, 1.0)
        return lr


def edm2_loss(net, y, labels, sigma, noise, sigma_data: float) -> torch.Tensor:
    """Per-element (w/e^u) ||D(y + σn; σ) - y||² + u, w = (σ² + σd²)/(σ σd)² (EDM2 Eq. 21)."""
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    denoised, logvar = net(y + noise * sigma, sigma, labels, return_logvar=True)
    return (weight / logvar.exp()) * (denoised - y) ** 2 + logvar


def _net_meta(cfg: GenTrainConfig, label_dim: int, img_channels: int) -> dict:
    overrides = dict(cfg.overrides)
    if cfg.dropout is not None:
        overrides["dropout"] = cfg.dropout
    overrides["sigma_data"] = cfg.sigma_data
    return dict(
        format=FORMAT,
        preset=cfg.preset,
        resolution=cfg.resolution,
        label_dim=label_dim,
        img_channels=img_channels,
        overrides=overrides,
    )


def _check_resume(meta: dict, state: dict, out_dir) -> None:
    for key in ("preset", "resolution", "label_dim", "img_channels", "overrides"):
        have = state.get(key)
        if isinstance(have, dict):
            have = {k: tuple(v) if isinstance(v, list) else v for k, v in have.items()}
        want = meta[key]
        if isinstance(want, dict):
            want = {k: tuple(v) if isinstance(v, list) else v for k, v in want.items()}
        if have != want:
            raise ValueError(
                f"{out_dir} holds a checkpoint with {key}={have!r}, but this run asks for "
                f"{key}={want!r}; use another out_dir or the matching config"
            )


def _write_history(out_dir: Path, history: list[dict]) -> None:
    atomic_write_json(out_dir / "history.json", history)
    lines = ["step,kimg,loss,lr,img_per_s"]
    lines += [
        f"{h['step']},{h['kimg']:.3f},{h['loss']:.6f},{h['lr']:.6g},{h['img_per_s']:.2f}"
        for h in history
    ]
    atomic_write_bytes(out_dir / "history.csv", ("\n".join(lines) + "\n").encode())


def train_generator(
    cfg: GenTrainConfig,
    data: LabeledImages | ImageSource,
    out_dir,
    device: str | torch.device | runtime.Runtime = "cpu",
    progress: bool = True,
    init: dict[str, torch.Tensor] | None = None,
) -> Precond:
    """Train (or resume) in ``out_dir``; returns the first EMA network in eval mode.

    ``device``: a device (a job is set up on it for this call, joining torchrun's group when
    there is one) or the running job's ``Runtime`` (the pipeline hands its own down).

    ``init``: a state dict of the same network to start from instead of random weights
    (fine-tuning a pretrained G); a resumed run continues from its checkpoint instead."""
    source = training_source(data, cfg.resolution)
    if len(source) == 0:
        raise ValueError("data holds no images")
    with runtime.using(device) as rt:
        return _train(cfg, source, Path(out_dir), rt, progress, init)


def _train(cfg: GenTrainConfig, source: ImageSource, out_dir: Path, rt, progress: bool, init):
    task = _GenTask(cfg, source, out_dir, rt, progress, init)
    training_loop.run(task, rt, out_dir, progress)
    return task.ema.emas[0].eval()


class _GenTask:
    """What one generator step is, for ``auggen.infra.training_loop`` (one epoch of all steps)."""

    name, epochs, check_every, compile = "train_gen", 1, 1, False

    def __init__(self, cfg: GenTrainConfig, source, out_dir: Path, rt, progress: bool, init):
        # Data.
        self.cfg, self.source, self.out_dir, self.rt = cfg, source, out_dir, rt
        self.progress = progress
        self.b_local = runtime.per_rank_batch(cfg.batch_size, rt.world_size)
        label_dim = int(cfg.label_dim if cfg.label_dim is not None else source.num_classes)
        if int(source.labels.max()) >= label_dim:
            raise ValueError(f"labels reach {int(source.labels.max())} but label_dim={label_dim}")
        self.label_dim = label_dim
        self.channels = int(source.read([0]).shape[1])  # also fails early on an unreadable source
        self.meta = _net_meta(cfg, label_dim, self.channels)

        # Network, optimizer, EMAs.
        torch.manual_seed(cfg.seed)
        net = build_unet(
            cfg.preset,
            cfg.resolution,
            label_dim,
            self.meta["img_channels"],
            **self.meta["overrides"],
        )
        if init is not None:  # before the EMAs, which start as copies of the net
            load_weights(net, init, "the init weights (pipeline pretrained.gen)")
        self.model = net.to(rt.device).train()
        self.opt = torch.optim.Adam(
            net.parameters(), lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps
        )
        self.ema = PowerFunctionEMA(net, cfg.ema_stds)
        self.history: list[dict] = []
        self.steps_per_epoch = cfg.total_steps
        self.divergence_factor, self.tensorboard = cfg.divergence_factor, cfg.tensorboard

    # Resume.
    def resume(self, loop) -> training_loop.Resumed | None:
        ck = load_checkpoint(self.out_dir, self.rt.device)
        if ck is None:
            return None
        state, tensors = ck
        _check_resume(self.meta, state, self.out_dir)
        self.model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.ema.load_state_dict({k: v for k, v in tensors.items() if k.startswith("ema")})
        self.opt.load_state_dict(join_optimizer_state(tensors, state["optimizer"]))
        step, self.history = int(state["step"]), list(state["history"])
        where = str(self.out_dir / STATE_JSON)
        return training_loop.Resumed(step, 0, step, state.get("loss_guard"), where)

    def prepare(self, loop) -> list:
        # Precision: the same on every rank (or the run stops), said once, kept in checkpoints.
        self.bf16, why = runtime.agreed_precision(
            self.cfg.precision, self.rt.device, "train_gen", self.rt
        )
        if self.rt.rank == 0 and self.progress:
            print(f"[train_gen] precision {why}", flush=True)
        self.precision = {"used": "bf16" if self.bf16 else "fp32", "why": why}
        cfg = self.cfg
        return [
            _GenHistory(self),
            training_loop.Periodic(cfg.snapshot_every, self._snapshot),
            training_loop.Periodic(cfg.sample_grid_every, self._sample_grid),
        ]

    def bar_args(self, epoch: int) -> dict:
        return {"desc": "train_gen"}

    def epoch_batches(self, loop):
        batches = GenStepBatches(
            self.cfg, self.source, self.channels, self.rt.rank, self.rt.world_size
        )
        pin = self.rt.device.type == "cuda"
        return step_loader(
            batches, loop.step, self.cfg.total_steps, self.cfg.num_workers, pin_memory=pin
        )

    # One step.
    def forward(self, loop, batch) -> torch.Tensor:
        device, cfg = self.rt.device, self.cfg
        self.lr = cfg.learning_rate(loop.step)
        for group in self.opt.param_groups:
            group["lr"] = self.lr
        y = batch["y"].to(device, non_blocking=True)
        sigma = batch["sigma"].to(device, non_blocking=True)
        noise = batch["noise"].to(device, non_blocking=True)
        labels = None
        if self.label_dim:
            # Per batch: a dense N x classes one-hot would not fit for WebFace-sized sets.
            labels = F.one_hot(batch["labels"].to(device), self.label_dim).to(torch.float32)
        torch.manual_seed(int(batch["seed"]))  # dropout
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return edm2_loss(loop.train_model, y, labels, sigma, noise, cfg.sigma_data)

    def update(self, loop, loss: torch.Tensor) -> None:
        net, cfg = self.model, self.cfg
        (loss.sum() / self.b_local).backward()
        for p in net.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=0, neginf=0, out=p.grad)
        step = loop.step + 1
        log_now = step % cfg.log_every == 0 or step == cfg.total_steps
        self.norm = grad_norm(net.parameters()) if loop.tb.active and log_now else None
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(net, t_next=step * cfg.batch_size, t_delta=cfg.batch_size)

    # Checkpoints.
    def checkpoint_due(self, loop) -> bool:
        return loop.step % self.cfg.checkpoint_every == 0 or loop.step == self.cfg.total_steps

    def end_epoch(self, loop) -> bool:
        return False  # the last step's checkpoint is due above

    def save(self, loop, epoch_end: bool) -> str:
        cfg = self.cfg
        if self.rt.rank == 0:
            opt_t, opt_meta = split_optimizer_state(self.opt)
            tensors = {f"net.{k}": v for k, v in self.model.state_dict().items()}
            tensors.update(self.ema.state_dict())
            tensors.update(opt_t)
            state = dict(
                self.meta,
                config=_jsonable(cfg),
                optimizer=opt_meta,
                history=self.history,
                ema_stds=list(cfg.ema_stds),
                rng={"scheme": "SeedSequence([seed, step]) per step", "seed": cfg.seed},
                loss_guard=loop.guard.state_dict(),
                precision=self.precision,
            )
            save_checkpoint(self.out_dir, loop.step, tensors, state, keep=cfg.keep_checkpoints)
            _write_history(self.out_dir, self.history)
        return str(self.out_dir / STATE_JSON)

    def finish(self, loop) -> None:
        resumed_finished = loop.resumed is not None and loop.resumed.step == loop.step
        if resumed_finished and self.rt.rank == 0:
            _write_history(self.out_dir, self.history)  # a finished run, resumed

    # Callbacks (rank 0).
    def _snapshot(self, loop) -> None:
        cfg, step = self.cfg, loop.step
        save_snapshot(
            self.out_dir / "ema_snapshots",
            step,
            self.ema.snapshot(cfg.snapshot_dtype),
            {"step": str(step), "stds": ",".join(map(str, cfg.ema_stds))},
            keep=cfg.max_snapshots,
        )

    def _sample_grid(self, loop) -> None:
        grid = save_sample_grid(self.ema.emas[0], self.out_dir, loop.step, self.bf16)
        loop.tb.image("samples", loop.step, grid)


class _GenHistory(training_loop.Callback):
    """The mean loss and img/s every ``log_every`` steps: history, TensorBoard, progress."""

    def __init__(self, task: _GenTask):
        self.task, self.loss_acc, self.n_acc, self.t0 = task, 0.0, 0, time.perf_counter()

    def on_step(self, loop) -> None:
        task, cfg, step = self.task, self.task.cfg, loop.step
        self.loss_acc += float(loop.loss.detach().mean())
        self.n_acc += 1
        if step % cfg.log_every == 0 or step == cfg.total_steps:
            dt = time.perf_counter() - self.t0
            rate = self.n_acc * cfg.batch_size / max(dt, 1e-9)
            loss = self.loss_acc / self.n_acc
            task.history.append(
                dict(
                    step=step,
                    kimg=step * cfg.batch_size / 1000,
                    loss=loss,
                    lr=task.lr,
                    img_per_s=rate,
                )
            )
            scalars = {"train/loss": loss, "train/lr": task.lr, "train/img_per_s": rate}
            loop.tb.scalars(step, {**scalars, "train/grad_norm": task.norm})
            loop.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
            self.loss_acc, self.n_acc, self.t0 = 0.0, 0, time.perf_counter()


def _jsonable(cfg: GenTrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
