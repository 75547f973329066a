"""Where the work runs: the device check every entry point makes before it starts."""

from __future__ import annotations

import torch


def check_device(device: str) -> torch.device:
    """``torch.device(device)`` if this machine can run on it; else a ValueError naming why."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from e
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(
                f"device {device!r}: this torch ({torch.__version__}) is a CPU-only build; "
                "install a CUDA build of torch or use --device cpu"
            )
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: torch sees no CUDA GPU (driver or visibility)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r}: only {count} CUDA device(s) visible")
        return dev
    if dev.type == "mps" and torch.backends.mps.is_available():
        return dev
    raise ValueError(f"device {device!r}: not available here (use cpu or cuda)")
