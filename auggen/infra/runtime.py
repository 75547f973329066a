"""Where the work runs: the device, the torchrun process group, and how work splits.

One module for what every entry point, trainer and stage needs to know about processes:

- ``check_device``: can this machine run on ``--device``?
- ``setup(device)``: join the process group torchrun describes in the environment (NCCL on
  CUDA, gloo on CPU) and pick this rank's device (``cuda:LOCAL_RANK``), once per job, in the
  entry point; the :class:`Runtime` it returns is handed down (``using(rt)`` in a trainer
  takes it as it is), and ``current()`` returns it to the collectives below. One process
  (no ``WORLD_SIZE``, or 1) starts no group at all, so ``python -m auggen.pipeline`` and
  ``torchrun --nproc_per_node 1`` agree.
- Collectives that name what they wait for (``barrier``, ``broadcast_object``,
  ``gather_rows``): a rank that died or hangs surfaces as :class:`RankTimeout` after
  ``timeout_s`` instead of a silent hang.
- Work splitting: ``my_items`` (round-robin units: shards, grid rows, models) and
  ``per_rank_batch`` (batch sizes are global and divided across ranks, everywhere).
- ``precision_choice`` / ``autocast``: the precision policy (``auto``: bf16 on CUDA and on
  CPUs with native bf16, fp32 elsewhere); ``agreed_precision`` checks that every rank agrees.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT_ENV = "AUGGEN_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0  # the longest a rank waits for the others (rank-0-only work too)
PRECISIONS = ("auto", "fp32", "bf16")


class RankTimeout(RuntimeError):
    """A collective did not complete in time: another rank died or hangs."""


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


@dataclass(frozen=True)
class Runtime:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    timeout_s: float = DEFAULT_TIMEOUT_S
    owns_group: bool = False  # setup() started the group, so cleanup() ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(env, name: str, default: int) -> int:
    raw = env.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def launch_env(env=None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (1 process without it)."""
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1)
    rank, local = _env_int(env, "RANK", 0), _env_int(env, "LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent launcher environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


def exit_process(code: int | None) -> None:
    """End a command-line process with exit status ``code``.

    Under torchrun (``WORLD_SIZE`` > 1) the interpreter's teardown is skipped: output is
    flushed, then ``os._exit``. By then the run's files are written and its process group
    destroyed, but a gloo worker thread can still be releasing the last collective's tensors,
    and a tensor made in Python needs the GIL to die, which a finalising interpreter no longer
    gives: the process aborts ("terminate called without an active exception", backtrace in
    ``ProcessGroupGloo::runLoop`` -> ``decref_pyobject``). It happened once in ~40 finished
    2-process CPU runs here, and torchrun reports it as a failed job."""
    code = 0 if code is None else int(code)
    if _env_int(os.environ, "WORLD_SIZE", 1) > 1:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def rank_device(device: str | torch.device, world: int, local_rank: int) -> torch.device:
    """The device this rank uses: under several processes ``cuda`` means ``cuda:LOCAL_RANK``."""
    dev = torch.device(device)
    if dev.type != "cuda" or world == 1:
        return dev
    if dev.index is not None and dev.index != local_rank:
        raise ValueError(
            f"device {str(dev)!r} under {world} processes: each rank takes cuda:LOCAL_RANK "
            "(set CUDA_VISIBLE_DEVICES to choose GPUs); pass --device cuda"
        )
    return torch.device("cuda", local_rank)


def timeout_from_env(env=None) -> float:
    env = os.environ if env is None else env
    raw = env.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


_current: Runtime | None = None


def setup(device: str | torch.device = "cpu", timeout_s: float | None = None) -> Runtime:
    """Join torchrun's group (if WORLD_SIZE > 1) and return this rank's :class:`Runtime`.

    Called once per job, by the entry point (the pipeline driver, or a trainer called on its
    own); everything below it is handed the Runtime. A process group the caller started
    itself is used as it is and left running. A second ``setup`` inside a job is refused:
    pass the job's Runtime down instead.
    """
    global _current
    if _current is not None:
        raise RuntimeError(
            f"a job is already set up in this process (rank {_current.rank} of "
            f"{_current.world_size} on {_current.device}); pass its Runtime down "
            "(e.g. train_fr(..., device=rt)) instead of setting up another"
        )
    rank, world, local = launch_env()
    timeout = timeout_from_env() if timeout_s is None else float(timeout_s)
    callers = dist.is_available() and dist.is_initialized()  # used as it is, left running
    if callers:
        rank, world = dist.get_rank(), dist.get_world_size()
    dev = rank_device(device, world, local)
    owns = False
    if world > 1 and not callers:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        kw = {"device_id": dev} if dev.type == "cuda" else {}
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout), **kw)
        owns = True
        rank, world = dist.get_rank(), dist.get_world_size()
    _current = Runtime(rank, world, local, dev, timeout, owns)
    return _current


@contextlib.contextmanager
def using(where: str | torch.device | Runtime):
    """The Runtime a piece of work runs on: ``where`` itself when it is one (the running
    job's, handed down), else a job set up on that device for the block and ended after it."""
    if isinstance(where, Runtime):
        yield where
        return
    rt = setup(where)
    try:
        yield rt
    finally:
        cleanup(rt)


def current() -> Runtime:
    """The runtime ``setup`` made (one CPU process when nothing was set up)."""
    if _current is not None:
        return _current
    if dist.is_available() and dist.is_initialized():
        return Runtime(dist.get_rank(), dist.get_world_size())
    return Runtime()


def cleanup(rt: Runtime) -> None:
    """End the group if ``rt`` started it (and forget the runtime ``setup`` made)."""
    global _current
    if rt.owns_group and dist.is_initialized():
        dist.destroy_process_group()
    if _current is rt:
        _current = None


@contextlib.contextmanager
def _waiting(rt: Runtime, what: str):
    try:
        yield
    except RuntimeError as e:  # gloo/NCCL timeouts and peers that went away
        raise RankTimeout(
            f"rank {rt.rank}/{rt.world_size}: waited for the other ranks at {what!r} and "
            f"gave up ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"another rank died or hangs (limit {rt.timeout_s:g} s: --set dist_timeout_s=... "
            f"or {TIMEOUT_ENV}). Rerun the same command to resume from the last finished unit."
        ) from e


def barrier(what: str, rt: Runtime | None = None) -> None:
    rt = rt or current()
    if rt.enabled:
        with _waiting(rt, what):
            # gloo's barrier honours the group timeout; monitored_barrier would name the
            # missing rank but is gloo-only, so the plain one serves both backends.
            dist.barrier()


def broadcast_object(obj, what: str, rt: Runtime | None = None):
    """Rank 0's ``obj`` on every rank (in memory between our own processes)."""
    rt = rt or current()
    if not rt.enabled:
        return obj
    box = [obj if rt.is_main else None]
    with _waiting(rt, what):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def _comm_device(rt: Runtime) -> torch.device:
    return rt.device if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_rows(t: torch.Tensor, what: str, rt: Runtime | None = None) -> torch.Tensor:
    """Every rank's rows, concatenated in rank order (row counts may differ per rank)."""
    rt = rt or current()
    if not rt.enabled:
        return t
    dev = _comm_device(rt)
    n = torch.tensor([len(t)], device=dev)
    counts = [torch.zeros_like(n) for _ in range(rt.world_size)]
    with _waiting(rt, what):
        dist.all_gather(counts, n)
        longest = int(max(int(c) for c in counts))
        padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=dev)
        padded[: len(t)] = t.to(dev)
        parts = [torch.empty_like(padded) for _ in range(rt.world_size)]
        dist.all_gather(parts, padded)
    return torch.cat([p[: int(c)] for p, c in zip(parts, counts)]).to(t.device)


def my_items(items: Sequence, rt: Runtime | None = None) -> list:
    """This rank's share of ``items``, round-robin (unit u goes to rank u mod K)."""
    rt = rt or current()
    return list(items)[rt.rank :: rt.world_size]


def my_block(n: int, rt: Runtime | None = None) -> range:
    """This rank's contiguous block of ``range(n)`` (blocks in rank order cover it once)."""
    rt = rt or current()
    return range(rt.rank * n // rt.world_size, (rt.rank + 1) * n // rt.world_size)


def per_rank_batch(global_batch: int, world: int, what: str = "batch_size") -> int:
    """Batch sizes are global, over all ranks; each rank takes ``global_batch / world``."""
    if global_batch % world:
        raise ValueError(
            f"{what}={global_batch} is the global batch over all ranks and must be divisible "
            f"by the number of processes ({world}); use a multiple of {world}"
        )
    return global_batch // world


# CPU flags (Linux /proc/cpuinfo names) of instructions that compute in bf16 natively:
# AVX-512 BF16 (dot products of bf16 pairs into fp32) and AMX's bf16 tiles. Without them
# oneDNN emulates bf16 through fp32 and it runs slower than fp32.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = "/proc/cpuinfo"


@functools.cache
def cpu_bf16_flags(cpuinfo: str = CPUINFO) -> tuple[str, ...]:
    """The native-bf16 flags of this CPU (empty where there are none or nothing says)."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)
    return ()


def precision_choice(precision: str, device: torch.device | str) -> tuple[bool, str]:
    """(bf16?, why) for the generator's ``precision`` on ``device``. ``auto``: bf16 compute
    (autocast: convolutions and matmuls in bf16 with fp32 accumulation; fp32 master weights,
    normalisations and loss) on a CUDA GPU that has bf16 and on a CPU with native bf16
    instructions; fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if precision != "auto":
        return precision == "bf16", f"{precision} (set explicitly)"
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, "bf16 (auto: the CUDA GPU supports bf16)"
        return False, "fp32 (auto: no CUDA GPU with bf16)"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            return True, f"bf16 (auto: this CPU computes bf16 natively: {', '.join(flags)})"
        return False, "fp32 (auto: this CPU has no native bf16, no AVX-512 BF16 or AMX)"
    return False, f"fp32 (auto: no bf16 policy for {device.type})"


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bf16 autocast on ``device`` (see :func:`precision_choice`)."""
    return precision_choice(precision, device)[0]


def agreed_precision(
    precision: str, device: torch.device | str, what: str, rt: Runtime | None = None
) -> tuple[bool, str]:
    """:func:`precision_choice`, checked to be the same on every rank (a collective: every
    rank calls it). Ranks that would differ (CPUs of two kinds) stop with a message."""
    rt = rt or current()
    choice = precision_choice(precision, device)
    if not rt.enabled:
        return choice
    every = [None] * rt.world_size
    with _waiting(rt, f"{what}: every rank's precision"):
        dist.all_gather_object(every, choice)
    if any(c[0] != choice[0] for c in every):
        ranks = "; ".join(f"rank {r}: {c[1]}" for r, c in enumerate(every))
        raise RuntimeError(
            f"{what}: the ranks would compute in different precisions ({ranks}); set the "
            "precision explicitly (e.g. --set gen.precision=fp32 --set sample.precision=fp32)"
        )
    return choice


def autocast(precision: str, device: torch.device):
    """The autocast context ``precision`` asks for on ``device`` (a no-op for fp32)."""
    device = torch.device(device)
    if use_bf16(precision, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def all_reduce_sum(t: torch.Tensor, rt: Runtime | None = None) -> torch.Tensor:
    """``t`` summed over ranks, in place."""
    rt = rt or current()
    if rt.enabled:
        with _waiting(rt, "all_reduce"):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, rt: Runtime | None = None) -> None:
    """Copy rank 0's buffers (BN running stats, AdaFace EMAs) to every rank.

    DDP syncs buffers at the start of each forward, so after the last step of an epoch each
    rank holds its own update; this makes the ranks agree before anything is saved.
    """
    rt = rt or current()
    if rt.enabled:
        with _waiting(rt, "broadcast_buffers"):
            for b in module.buffers():
                dist.broadcast(b, src=0)
