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
stops the run with ``TrainingDiverged`` (``auggen.training_guard``) before anything from that
step is written.

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
from tqdm.auto import tqdm

from auggen import runtime as D
from auggen.data.loader import step_loader, training_source
from auggen.data.source import ImageSource
from auggen.data.types import LabeledImages
from auggen.faults import fault_point
from auggen.files import load_safetensors, load_torch_weights, read_json
from auggen.recognition.augment import AugmentConfig, augment_batch
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
from auggen.recognition.iresnet import build_backbone, memory_format_for
from auggen.recognition.partial_fc import sample_classes
from auggen.recognition.periodic_verification import PeriodicVerification
from auggen.recognition.schedule import SCHEDULES, LRSchedule
from auggen.training_guard import LossGuard, StepLosses
from auggen.training_log import TrainingLog, grad_norm

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
    # last 50 losses (auggen.training_guard); 0: never stop.
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
    device: str | torch.device = "cpu",
    progress: bool = True,
    init: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Train (or resume) and return the backbone in eval mode; see the module docstring.

    ``init``: a backbone state dict of the same architecture to start from (fine-tuning a
    pretrained recogniser; the margin head starts fresh, its classes are this set's)."""
    source = training_source(data, cfg.input_size)
    check_data(source)
    info = D.setup(device)
    device = info.device
    try:
        return _train(cfg, source, Path(out_dir), device, progress, info, init)
    finally:
        D.cleanup(info)


def _train(cfg, source, out, device, progress, info, init=None) -> nn.Module:
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
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(
        cfg.backbone, cfg.input_size, cfg.embedding_size, width=cfg.width, dropout=cfg.dropout
    )
    if init is not None:
        try:
            backbone.load_state_dict(init)
        except RuntimeError as e:
            raise ValueError(
                f"the init weights do not fit fr.backbone={cfg.backbone!r} (width {cfg.width}, "
                f"{cfg.input_size} px, {cfg.embedding_size}-d): {str(e).splitlines()[0]}"
            ) from None
    head = build_head(cfg.head, cfg.embedding_size, source.num_classes, **cfg.head_kwargs)
    model = FRModel(backbone, head).to(device)
    memory_format, why = memory_format_for(model, device, cfg.channels_last)
    if memory_format != torch.channels_last and cfg.channels_last and info.is_main:
        print(f"[train_fr] activations {why}", flush=True)
    model = model.to(memory_format=memory_format)
    optimizer = _optimizer(model, cfg)
    schedule = LRSchedule(
        cfg.lr,
        cfg.epochs * steps,
        round(cfg.warmup_epochs * steps),
        cfg.schedule,
        tuple(m * steps for m in cfg.milestones),
        cfg.lr_gamma,
    )
    amp_dtype = _amp_dtype(cfg, device)

    start_epoch, step, history = 0, 0, []
    guard = LossGuard(cfg.divergence_factor)
    ckpt_path = out / "checkpoint.pt"
    ckpt = load_run_checkpoint(ckpt_path, cfg, device, _RESUMABLE)
    first, partial = 0, None  # where the first epoch resumes, and its totals so far
    if ckpt is not None:
        backbone.load_state_dict(ckpt["backbone"])
        head.load_state_dict(ckpt["head"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        first, partial = resume_point(ckpt, steps, ckpt_path)
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        guard.load_state_dict(ckpt.get("loss_guard"))
        guard.note_checkpoint(step, checkpoint_label(ckpt_path, start_epoch, partial))
    resume_step = step if ckpt is not None else None
    tb = TrainingLog(out / "tensorboard", cfg.tensorboard, info.is_main, resume_step)
    verify = PeriodicVerification(
        cfg.verify_bins,
        cfg.verify_every_steps,
        cfg.input_size,
        out,
        device,
        info.is_main,
        step,
    )
    # All ranks judge the same all-reduced losses, so they stop together (no rank hangs).
    step_losses = StepLosses(guard, every=_CHECK_EVERY, world_size=info.world_size)
    D.barrier("train_fr start", info)
    train_model = model
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def save(epoch: int, partial):
        """``epoch`` epochs done (+ ``partial`` totals of the next one, inside it)."""
        step_losses.flush()  # judge every loss before writing
        if info.is_main:
            state = guard.state_dict()
            _save_checkpoint(ckpt_path, cfg, model, optimizer, epoch, step, history, state, partial)
        guard.note_checkpoint(step, checkpoint_label(ckpt_path, epoch, partial))

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        augment_in_workers = cfg.num_workers > 0
        batches = EpochBatches(source, cfg, epoch, info, steps, augment_in_workers)
        loader = step_loader(
            batches, first, steps, cfg.num_workers, pin_memory=device.type == "cuda"
        )
        bar = tqdm(
            total=steps,
            initial=first,
            desc=f"fr epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=not (progress and info.is_main),
            leave=False,
        )
        # Loss sum, correct, samples; kept on the device so a step never waits for the GPU.
        # A run resumed inside the epoch starts from the saved (all-ranks) totals on rank 0.
        totals = torch.zeros(3, dtype=torch.float64, device=device)
        seconds_before = float(partial["seconds"]) if partial is not None else 0.0
        if partial is not None and info.is_main:
            totals += torch.tensor(partial["totals"], dtype=torch.float64, device=device)
        t0 = t_log = time.perf_counter()
        i_log = first
        for i, (x, y) in enumerate(loader, start=first):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if not augment_in_workers:
                g = seeded_generator(cfg.seed, epoch, i, info.rank)
                x = augment_batch(to_model_input(x), cfg.augment, g)
            x = x.contiguous(memory_format=memory_format)
            classes = None
            if cfg.partial_fc_rate < 1.0:
                g = seeded_generator(cfg.seed, epoch, i, info.rank, 1)
                classes, y = sample_classes(y, source.num_classes, cfg.partial_fc_rate, g)
            lr = schedule(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = train_model(x, y, classes, amp_dtype)
            loss = F.cross_entropy(logits, y)
            step_losses.add(step + 1, loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            log_now = tb.active and (step + 1) % _LOG_EVERY == 0
            norm = grad_norm(model.parameters()) if log_now else None
            optimizer.step()
            step += 1
            if log_now:
                now = time.perf_counter()
                rate = (i + 1 - i_log) * cfg.batch_size / (now - t_log)
                tb.scalars(step, _step_scalars(loss, lr, rate, norm, head))
                t_log, i_log = now, i + 1
            if verify.due(step):
                tb.scalars(step, verify.run(backbone, step, step / steps))
            with torch.no_grad():
                correct = (logits.argmax(1) == y).sum()
                totals += torch.stack([loss.detach() * len(y), correct, correct.new_tensor(len(y))])
            if not bar.disable and (i % _BAR_EVERY == 0 or i + 1 == steps):
                rate = (i + 1 - first) * cfg.batch_size / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
            bar.update()
            every = cfg.checkpoint_every_steps
            if every and step % every == 0 and i + 1 < steps:  # an epoch end saves below
                done = D.all_reduce_sum(totals.clone(), info).tolist()
                seconds = seconds_before + time.perf_counter() - t0
                save(epoch, {"totals": done, "seconds": seconds})
                D.barrier("train_fr checkpoint", info)
                fault_point("train_fr.step", step)
        bar.close()
        step_losses.flush()  # judge the epoch's last losses before its history/checkpoint
        D.all_reduce_sum(totals, info)
        totals = totals.cpu()
        D.broadcast_buffers(model, info)
        seconds = seconds_before + time.perf_counter() - t0
        first, partial = 0, None
        history.append(
            {
                "epoch": epoch + 1,
                "step": step,
                "loss": totals[0].item() / totals[2].item(),
                "acc": totals[1].item() / totals[2].item(),
                "lr": lr,
                "img_per_s": totals[2].item() / seconds,
                "seconds": seconds,
            }
        )
        every = cfg.checkpoint_every_steps
        at_step = bool(every) and step % every == 0
        save_now = epoch + 1 == cfg.epochs or (epoch + 1) % cfg.checkpoint_every == 0 or at_step
        if info.is_main:
            write_history(out, history)
        tb.scalars(step, {f"epoch/{k}": history[-1][k] for k in ("loss", "acc", "img_per_s")})
        if save_now:
            save(epoch + 1, None)
        D.barrier("train_fr epoch end", info)
    if verify.active and verify.last_step != step:
        tb.scalars(step, verify.run(backbone, step, step / steps))
    tb.close()
    if info.is_main:
        save_weights(backbone.state_dict(), out / "model.safetensors")
    D.barrier("train_fr end", info)
    return backbone.eval()


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
