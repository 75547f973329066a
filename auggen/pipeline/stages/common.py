"""Helpers the stages share: the generator as a uint8 sampler, M_orig as an embedder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from auggen.data.index import open_index
from auggen.eval import extract_embeddings
from auggen.generator.sample import auto_batch_size, sample, to_uint8
from auggen.generator.train import load_generator
from auggen.infra import runtime
from auggen.recognition.pretrained import load_pretrained
from auggen.recognition.train import load_backbone


def fr_run_dir(stage_dir: Path, variant: str, seed: int) -> Path:
    return Path(stage_dir) / variant / f"seed{seed}"


def m_orig_dir(cfg, in_dirs) -> Path:
    """M_orig: the baseline FR model of the first seed."""
    return fr_run_dir(in_dirs["train_fr"], "baseline", cfg.seeds[0])


def load_fr(run_dir: Path, device: torch.device):
    return load_backbone(run_dir, device=device)


def m_orig(cfg, in_dirs, device: torch.device):
    """M_orig on ``device``: ``pretrained.fr`` in use mode, else the first seed's baseline."""
    if cfg.pretrained.fr and cfg.pretrained.fr_mode == "use":
        return load_pretrained(cfg.pretrained.fr, device=device)
    return load_fr(m_orig_dir(cfg, in_dirs), device)


def embedder(model, cfg, device: torch.device):
    """uint8 images -> L2-normalised flip-fused embeddings at the FR input size, computed on
    ``device`` (the model's)."""

    def embed(images: torch.Tensor) -> torch.Tensor:
        return extract_embeddings(
            model,
            images,
            batch_size=cfg.embed.batch_size,
            flip=cfg.embed.flip,
            device=device,
            input_size=getattr(model, "input_size", cfg.fr.input_size),  # a pretrained net's own
        )

    return embed


def load_gen(in_dirs, device: torch.device):
    return load_generator(Path(in_dirs["train_gen"]) / "model", device=device)


def sampler(net, cfg, rt: runtime.Runtime, sources: int = 1):
    """(conditions (M, L), seeds (M,)) -> uint8 images (M, 3, R, R) through the Heun sampler.

    ``sources`` = k > 1: score mixing, conditions (M, k, L) with convex weights (M, k); the
    batch holds 1/k the images, so a network call keeps its size.
    """

    s = cfg.sample
    bf16, why = runtime.agreed_precision(s.precision, rt.device, "sampler", rt)
    if rt.is_main and cfg.progress:
        print(f"[sample] precision {why}", flush=True)
    batch = s.batch_size or auto_batch_size(net, rt.device, autocast=bf16)
    batch = max(1, batch // sources)

    def sample_fn(conditions: torch.Tensor, seeds, weights=None) -> torch.Tensor:
        x = sample(
            net,
            conditions,
            [int(v) for v in torch.as_tensor(seeds).tolist()],
            num_steps=s.num_steps,
            sigma_min=s.sigma_min,
            sigma_max=s.sigma_max,
            rho=s.rho,
            guidance=s.guidance,
            batch_size=batch,
            solver=s.solver,
            autocast=bf16,
            weights=weights,
        )
        return to_uint8(x)

    return sample_fn


def with_data_workers(trainer_cfg, cfg):
    """A trainer's config whose DataLoader uses ``data.workers`` when that is set."""
    if not cfg.data.workers:
        return trainer_cfg
    return dataclasses.replace(trainer_cfg, num_workers=cfg.data.workers)


def fr_config(cfg, seed: int):
    """The FR trainer's config for one seed."""
    return dataclasses.replace(with_data_workers(cfg.fr, cfg), seed=int(seed))


def open_data(in_dirs, name: str = "train"):
    """A dataset index written by the ``data`` stage (``train``, ``heldout``, ``unseen``...)."""

    return open_index(Path(in_dirs["data"]) / f"{name}.index.json")
