"""torchrun support: read the launcher's environment, start/stop the process group."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when setup() started the group and cleanup() must end it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str | torch.device) -> tuple[DistInfo, torch.device]:
    """Join the torchrun group if WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA).

    Returns the rank info and the device this rank trains on (cuda:LOCAL_RANK under CUDA).
    """
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kw = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kw)
        owns = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, owns), device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def cleanup(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BN running stats, AdaFace EMAs) to every rank.

    DDP syncs buffers at the start of each forward, so after the last step of an epoch each
    rank holds its own update; this makes the ranks agree before anything is saved.
    """
    if info.enabled:
        for b in module.buffers():
            dist.broadcast(b, src=0)
