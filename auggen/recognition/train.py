"""Train an IResNet + margin head on a LabeledImages set or an ImageSource (AdaFace recipe),
with exact resume.

SGD (momentum, weight decay on all but BN parameters), linear warm-up then step or cosine decay
per iteration, bf16 autocast on CUDA, DDP when launched with torchrun (``batch_size`` is
global: each of K ranks takes ``batch_size / K``, so any K trains on the same global batches).
Every random choice (epoch order, augmentation, partial-FC negatives) comes from a generator
seeded by (seed, epoch, step, rank), so a run resumed from a checkpoint, at an epoch end or
inside an epoch (``checkpoint_every_steps``), retraces the uninterrupted one. Each
step's images are read from the source when needed (``num_workers`` DataLoader workers read
and augment ahead), so a dataset never has to fit in memory. A non-finite or exploding loss
stops the run with ``TrainingDiverged`` (``auggen.infra.training_guard``) before anything from that
step is written. The loop itself (resume, checkpoints, the guard, logging, DDP, progress) is
``auggen.infra.training_loop``; this module says what a step, a checkpoint and an epoch are.

``out_dir`` holds: config.json, checkpoint.pt (model, head, optimizer, step, RNG, history, the
loss guard's recent losses; inside an epoch also its running totals), history.json /
history.csv (per-epoch loss, acc, lr, img/s) and, when done, model.safetensors (backbone
weights, read by ``load_backbone``). Optional, from rank 0: ``tensorboard/`` (loss, lr, img/s,
gradient norm, AdaFace's feature-norm statistics; ``tensorboard=True``) and verification.csv
(10-fold accuracy on ``verify_bins`` every ``verify_every_steps`` steps and at the end).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from auggen.data.loader import step_loader, training_source
from auggen.data.source import ImageSource
from auggen.data.types import LabeledImages
from auggen.infra import runtime as D
from auggen.infra import training_loop
from auggen.infra.files import load_safetensors, load_torch_weights, read_json
from auggen.infra.training_log import grad_norm
from auggen.recognition.augment import AugmentConfig, augment_batch
from auggen.recognition.backbones import build_backbone
from auggen.recognition.batches import (
    EpochBatches,
    check_data,
    seeded_generator,
    to_model_input,
)
from auggen.recognition.checkpoint import (
    checkpoint_label,
    load_run_checkpoint,
    resume_point,
    save_json,
    save_weights,
    write_history,
)
from auggen.recognition.checkpoint import save_run_checkpoint as _save_checkpoint
from auggen.recognition.heads import build_head
from auggen.recognition.iresnet import memory_format_for
from auggen.recognition.partial_fc import sample_classes
from auggen.recognition.periodic_verification import PeriodicVerification
from auggen.recognition.schedule import SCHEDULES, LRSchedule

AMP_MODES = ("auto", "bf16", "off")
# Fields that may change between a run and its resumption.
_RESUMABLE = {
    "epochs",
    "checkpoint_every",
    "checkpoint_every_steps",
    "num_workers",
    "divergence_factor",
    "tensorboard",
    "verify_bins",
    "verify_every_steps",
}
_BAR_EVERY = 10  # steps between progress-bar updates (each one syncs with the GPU)
_LOG_EVERY = 10  # steps between TensorBoard scalars (a sync, and only with tensorboard on)
# Steps between loss checks (one GPU sync, one all-reduce under DDP, each); the check also
# runs at every epoch end, before anything is written.
_CHECK_EVERY = 10


@dataclass(frozen=True)
class FRTrainConfig:
    backbone: str = "ir50"
    input_size: int = 112
    width: int = 64
    embedding_size: int = 512
    dropout: float = 0.0
    head: str = "adaface"
    head_kwargs: dict = field(default_factory=dict)  # e.g. {"m": 0.4, "h": 0.333, "s": 64}
    partial_fc_rate: float = 1.0  # fraction of classes per step (1 = all)
    epochs: int = 26
    batch_size: int = 512  # global, over all ranks (each takes batch_size / world_size)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    schedule: str = "step"  # "step" | "cosine"
    milestones: tuple[int, ...] = (12, 20, 24)  # epochs, for "step"
    lr_gamma: float = 0.1
    amp: str = "auto"  # "auto": bf16 on CUDA when supported; "bf16"; "off"
    channels_last: bool = False
    augment: AugmentConfig = AugmentConfig()
    num_workers: int = 0  # >0: read + augment in DataLoader workers (CPU); 0: main process
    seed: int = 0
    checkpoint_every: int = 1  # epochs
    # Also every this many steps inside an epoch (long epochs on big sets); 0: epoch ends only.
    checkpoint_every_steps: int = 0
    # Stop when a step's loss is non-finite or above median + this x max(|median|, 1) of the
    # last 50 losses (auggen.infra.training_guard); 0: never stop.
    divergence_factor: float = 100.0
    tensorboard: bool = False  # rank 0 writes TensorBoard events to out_dir/tensorboard
    verify_bins: tuple[str, ...] = ()  # insightface .bin files verified while training
    verify_every_steps: int = 0  # verify every this many steps (and at the end); 0: end only

    def __post_init__(self):
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 < self.partial_fc_rate <= 1.0:
            raise ValueError(f"partial_fc_rate must be in (0, 1], got {self.partial_fc_rate}")
        for name in ("num_workers", "checkpoint_every_steps", "verify_every_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        if not self.divergence_factor >= 0:
            raise ValueError(f"divergence_factor must be >= 0, got {self.divergence_factor}")
        object.__setattr__(self, "milestones", tuple(self.milestones))
        object.__setattr__(self, "verify_bins", tuple(str(b) for b in self.verify_bins))
        if self.verify_every_steps and not self.verify_bins:
            raise ValueError(
                f"verify_every_steps={self.verify_every_steps} needs verify_bins (.bin files)"
            )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        d["verify_bins"] = list(self.verify_bins)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FRTrainConfig:
        d = dict(d)
        aug = d.pop("augment", {})
        aug = {k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()}
        return cls(**d, augment=AugmentConfig(**aug))


PRESETS = {
    # The paper's FR recipe (AdaFace IR50, 112 px, global batch 512).
    "ir50-adaface": FRTrainConfig(),
    # A CPU-sized model for the ORL demo (40 ids x 10 images).
    "orl-tiny": FRTrainConfig(
        backbone="ir18",
        width=16,
        input_size=32,
        embedding_size=128,
        batch_size=32,
        epochs=20,
        lr=0.05,
        warmup_epochs=1,
        schedule="cosine",
        milestones=(),
        checkpoint_every=5,
    ),
}


class FRModel(nn.Module):
    """Backbone + head as one module, so DDP syncs both."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x, labels, classes=None, amp_dtype=None):
        with torch.autocast(
            x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            emb = self.backbone(x)
        return self.head(emb.float(), labels, classes)


def _amp_dtype(cfg: FRTrainConfig, device: torch.device):
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return None
    return torch.bfloat16


def _step_scalars(loss, lr, img_per_s, norm, head) -> dict:
    """TensorBoard scalars of one step (rank 0's batch); AdaFace adds its feature-norm EMAs."""
    out = {
        "train/loss": loss.item(),
        "train/lr": lr,
        "train/img_per_s": img_per_s,
        "train/grad_norm": norm.item(),
    }
    for name in ("batch_mean", "batch_std"):  # AdaFace's running mean and std of ||f||
        if isinstance(getattr(head, name, None), torch.Tensor):
            out[f"adaface/feature_norm_{name[6:]}"] = getattr(head, name).item()
    return out


def _optimizer(model: FRModel, cfg: FRTrainConfig) -> torch.optim.SGD:
    # AdaFace's split: no weight decay on BatchNorm affine parameters.
    bn_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters()
    }
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) not in bn_ids], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if id(p) in bn_ids], "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def train_fr(
    cfg: FRTrainConfig,
    data: LabeledImages | ImageSource,
    out_dir: str | Path,
    device: str | torch.device | D.Runtime = "cpu",
    progress: bool = True,
    init: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Train (or resume) and return the backbone in eval mode; see the module docstring.

    ``init``: a backbone state dict of the same architecture to start from (fine-tuning a
    pretrained recogniser; the margin head starts fresh, its classes are this set's).
    ``device``: a device (a job is set up on it for this call, joining torchrun's group when
    there is one) or the running job's ``Runtime`` (the pipeline hands its own down)."""
    source = training_source(data, cfg.input_size)
    check_data(source)
    with D.using(device) as info:
        return _train(cfg, source, Path(out_dir), progress, info, init)


def _train(cfg: FRTrainConfig, source, out: Path, progress: bool, info, init) -> nn.Module:
    task = _FRTask(cfg, source, out, info, init)
    training_loop.run(task, info, out, progress)
    return task.backbone.eval()


class _FRTask:
    """What one FR step is, for ``auggen.infra.training_loop`` (epochs of len // batch steps)."""

    name, compile = "train_fr", False

    def __init__(self, cfg: FRTrainConfig, source, out: Path, info, init):
        # Data.
        D.per_rank_batch(cfg.batch_size, info.world_size)  # a clear error before any work
        steps = len(source) // cfg.batch_size
        if steps == 0:
            raise ValueError(
                f"batch_size {cfg.batch_size} (global) exceeds the {len(source)} images; "
                "lower batch_size"
            )
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_json(cfg.to_dict(), out / "config.json")
        self.cfg, self.source, self.out, self.info = cfg, source, out, info
        self.epochs, self.steps_per_epoch = cfg.epochs, steps
        self.divergence_factor, self.tensorboard = cfg.divergence_factor, cfg.tensorboard
        self.check_every = _CHECK_EVERY
        self.ckpt_path = out / "checkpoint.pt"
        self.history: list[dict] = []
        self.partial = None  # the resumed epoch's totals so far

        # Model, optimizer, schedule.
        self._build_model(init)
        self.optimizer = _optimizer(self.model, cfg)
        self.schedule = LRSchedule(
            cfg.lr,
            cfg.epochs * steps,
            round(cfg.warmup_epochs * steps),
            cfg.schedule,
            tuple(m * steps for m in cfg.milestones),
            cfg.lr_gamma,
        )
        self.amp_dtype = _amp_dtype(cfg, info.device)

    def _build_model(self, init) -> None:
        cfg, source, info = self.cfg, self.source, self.info
        torch.manual_seed(cfg.seed)
        backbone = build_backbone(
            cfg.backbone, cfg.input_size, cfg.embedding_size, width=cfg.width, dropout=cfg.dropout
        )
        if init is not None:
            try:
                backbone.load_state_dict(init)
            except RuntimeError as e:
                raise ValueError(
                    f"the init weights do not fit fr.backbone={cfg.backbone!r} (width "
                    f"{cfg.width}, {cfg.input_size} px, {cfg.embedding_size}-d): "
                    f"{str(e).splitlines()[0]}"
                ) from None
        head = build_head(cfg.head, cfg.embedding_size, source.num_classes, **cfg.head_kwargs)
        model = FRModel(backbone, head).to(info.device)
        memory_format, why = memory_format_for(model, info.device, cfg.channels_last)
        if memory_format != torch.channels_last and cfg.channels_last and info.is_main:
            print(f"[train_fr] activations {why}", flush=True)
        self.model = model.to(memory_format=memory_format)
        self.backbone, self.head, self.memory_format = backbone, head, memory_format

    # Resume.
    def resume(self, loop) -> training_loop.Resumed | None:
        ckpt = load_run_checkpoint(self.ckpt_path, self.cfg, self.info.device, _RESUMABLE)
        if ckpt is None:
            return None
        self.backbone.load_state_dict(ckpt["backbone"])
        self.head.load_state_dict(ckpt["head"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        epoch, step, self.history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        first, self.partial = resume_point(ckpt, self.steps_per_epoch, self.ckpt_path)
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        where = checkpoint_label(self.ckpt_path, epoch, self.partial)
        return training_loop.Resumed(step, epoch, first, ckpt.get("loss_guard"), where)

    def prepare(self, loop) -> list:
        cfg, info = self.cfg, self.info
        verify = PeriodicVerification(
            cfg.verify_bins,
            cfg.verify_every_steps,
            cfg.input_size,
            self.out,
            info.device,
            info.is_main,
            loop.step,
        )
        return [_FRStepLog(self), _FRVerification(self, verify), _FRProgress(self)]

    def bar_args(self, epoch: int) -> dict:
        return {"desc": f"fr epoch {epoch + 1}/{self.cfg.epochs}", "unit": "step", "leave": False}

    def epoch_batches(self, loop):
        cfg, info, device = self.cfg, self.info, self.info.device
        self.model.train()
        self.augment_in_workers = cfg.num_workers > 0
        steps = self.steps_per_epoch
        batches = EpochBatches(self.source, cfg, loop.epoch, info, steps, self.augment_in_workers)
        loader = step_loader(
            batches, loop.first, steps, cfg.num_workers, pin_memory=device.type == "cuda"
        )
        # Loss sum, correct, samples; kept on the device so a step never waits for the GPU.
        # A run resumed inside the epoch starts from the saved (all-ranks) totals on rank 0.
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)
        partial = self.partial
        self.seconds_before = float(partial["seconds"]) if partial is not None else 0.0
        if partial is not None and info.is_main:
            self.totals += torch.tensor(partial["totals"], dtype=torch.float64, device=device)
        return loader

    # One step.
    def forward(self, loop, batch) -> torch.Tensor:
        cfg, info, device = self.cfg, self.info, self.info.device
        x, y = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if not self.augment_in_workers:
            g = seeded_generator(cfg.seed, loop.epoch, loop.i, info.rank)
            x = augment_batch(to_model_input(x), cfg.augment, g)
        x = x.contiguous(memory_format=self.memory_format)
        classes = None
        if cfg.partial_fc_rate < 1.0:
            g = seeded_generator(cfg.seed, loop.epoch, loop.i, info.rank, 1)
            classes, y = sample_classes(y, self.source.num_classes, cfg.partial_fc_rate, g)
        self.lr = self.schedule(loop.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.logits, self.y = loop.train_model(x, y, classes, self.amp_dtype), y
        return F.cross_entropy(self.logits, y)

    def update(self, loop, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.log_now = loop.tb.active and (loop.step + 1) % _LOG_EVERY == 0
        self.norm = grad_norm(self.model.parameters()) if self.log_now else None
        self.optimizer.step()
        with torch.no_grad():
            y = self.y
            correct = (self.logits.argmax(1) == y).sum()
            self.totals += torch.stack(
                [loss.detach() * len(y), correct, correct.new_tensor(len(y))]
            )

    # Checkpoints and history.
    def checkpoint_due(self, loop) -> bool:
        every = self.cfg.checkpoint_every_steps
        # An epoch end saves in end_epoch.
        return bool(every) and loop.step % every == 0 and loop.i + 1 < self.steps_per_epoch

    def end_epoch(self, loop) -> bool:
        cfg, info = self.cfg, self.info
        D.all_reduce_sum(self.totals, info)
        totals = self.totals.cpu()
        D.broadcast_buffers(self.model, info)
        seconds = self.seconds_before + time.perf_counter() - loop.t0
        self.partial = None
        self.history.append(
            {
                "epoch": loop.epoch + 1,
                "step": loop.step,
                "loss": totals[0].item() / totals[2].item(),
                "acc": totals[1].item() / totals[2].item(),
                "lr": self.lr,
                "img_per_s": totals[2].item() / seconds,
                "seconds": seconds,
            }
        )
        every = cfg.checkpoint_every_steps
        at_step = bool(every) and loop.step % every == 0
        epoch = loop.epoch + 1
        if info.is_main:
            write_history(self.out, self.history)
        h = self.history[-1]
        loop.tb.scalars(loop.step, {f"epoch/{k}": h[k] for k in ("loss", "acc", "img_per_s")})
        return epoch == cfg.epochs or epoch % cfg.checkpoint_every == 0 or at_step

    def save(self, loop, epoch_end: bool) -> str:
        """``epoch`` epochs done (+ ``partial`` totals of the next one, inside it)."""
        epoch, partial = loop.epoch + 1, None
        if not epoch_end:
            done = D.all_reduce_sum(self.totals.clone(), self.info).tolist()
            seconds = self.seconds_before + time.perf_counter() - loop.t0
            epoch, partial = loop.epoch, {"totals": done, "seconds": seconds}
        if self.info.is_main:
            args = (self.optimizer, epoch, loop.step, self.history, loop.guard.state_dict())
            _save_checkpoint(self.ckpt_path, self.cfg, self.model, *args, partial)
        return checkpoint_label(self.ckpt_path, epoch, partial)

    def finish(self, loop) -> None:
        if self.info.is_main:
            save_weights(self.backbone.state_dict(), self.out / "model.safetensors")


class _FRStepLog(training_loop.Callback):
    """TensorBoard scalars of rank 0's batch every ``_LOG_EVERY`` steps (tensorboard on)."""

    def __init__(self, task: _FRTask):
        self.task = task

    def on_epoch_start(self, loop) -> None:
        self.t_log, self.i_log = time.perf_counter(), loop.first

    def on_step(self, loop) -> None:
        task = self.task
        if task.log_now:
            now = time.perf_counter()
            rate = (loop.i + 1 - self.i_log) * task.cfg.batch_size / (now - self.t_log)
            loop.tb.scalars(
                loop.step, _step_scalars(loop.loss, task.lr, rate, task.norm, task.head)
            )
            self.t_log, self.i_log = now, loop.i + 1


class _FRVerification(training_loop.Callback):
    """10-fold accuracy on the ``.bin`` sets every ``verify_every_steps`` and at the end."""

    def __init__(self, task: _FRTask, verify: PeriodicVerification):
        self.task, self.verify = task, verify

    def _run(self, loop) -> None:
        epochs = loop.step / self.task.steps_per_epoch
        loop.tb.scalars(loop.step, self.verify.run(self.task.backbone, loop.step, epochs))

    def on_step(self, loop) -> None:
        if self.verify.due(loop.step):
            self._run(loop)

    def on_end(self, loop) -> None:
        if self.verify.active and self.verify.last_step != loop.step:
            self._run(loop)


class _FRProgress(training_loop.Callback):
    """Loss, lr and img/s on the bar every ``_BAR_EVERY`` steps (each one syncs)."""

    def __init__(self, task: _FRTask):
        self.task = task

    def on_step(self, loop) -> None:
        task, i = self.task, loop.i
        if not loop.bar.disable and (i % _BAR_EVERY == 0 or i + 1 == task.steps_per_epoch):
            rate = (i + 1 - loop.first) * task.cfg.batch_size / (time.perf_counter() - loop.t0)
            loss = loop.loss.item()
            loop.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{task.lr:.3g}", img_s=f"{rate:.0f}")


def load_backbone(out_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the backbone from ``out_dir/config.json`` and load its trained weights (eval)."""
    out = Path(out_dir)
    if not (out / "config.json").exists():
        raise FileNotFoundError(f"{out}/config.json: not an FR training folder")
    cfg = FRTrainConfig.from_dict(read_json(out / "config.json"))
    net = build_backbone(
        cfg.backbone, cfg.input_size, cfg.embedding_size, width=cfg.width, dropout=cfg.dropout
    )
    if (out / "model.safetensors").exists():
        state = load_safetensors(out / "model.safetensors")
    elif (out / "checkpoint.pt").exists():
        state = load_torch_weights(out / "checkpoint.pt")["backbone"]
    else:
        raise FileNotFoundError(f"{out}: no model.safetensors or checkpoint.pt")
    net.load_state_dict(state)
    return net.to(device).eval()
