"""How the Triton launchers run: on the GPU of their tensors (Triton launches on the *current*
device, so a tensor on cuda:1 while cuda:0 is current would be read at illegal addresses), and
with ``AUGGEN_CUDA_SYNC=1`` synchronised after each launch, so an asynchronous fault is
raised naming the op that made it rather than by whatever torch op synchronises next."""

import contextlib
import os

import torch

SYNC = os.environ.get("AUGGEN_CUDA_SYNC", "0") == "1"


@contextlib.contextmanager
def on_device(op: str, x: torch.Tensor):
    """Run the launches inside on ``x``'s device; CPU tensors (the interpreter) pass through."""
    if not x.is_cuda:
        yield
        return
    with torch.cuda.device(x.device):
        yield
        if SYNC and not torch.cuda.is_current_stream_capturing():
            sync(op, x.device)


def sync(op: str, device: torch.device) -> None:
    """Wait for ``device``; a kernel fault becomes a RuntimeError naming ``op``."""
    try:
        torch.cuda.synchronize(device)
    except RuntimeError as e:
        raise RuntimeError(f"auggen Triton kernel {op} failed on {device}: {e}") from e
