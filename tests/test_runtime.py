"""The distributed runtime with a fake launcher environment (no process group started)."""

import os
import subprocess
import sys

import pytest
import torch

from auggen.generator.sample import batch_from_memory
from auggen.infra import runtime


def test_launch_env_reads_torchrun_variables():
    assert runtime.launch_env({}) == (0, 1, 0)
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    assert runtime.launch_env(env) == (5, 8, 1)
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        runtime.launch_env({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="RANK=3, WORLD_SIZE=2"):
        runtime.launch_env({"RANK": "3", "WORLD_SIZE": "2"})


def test_rank_device_takes_local_rank_under_several_processes():
    assert runtime.rank_device("cuda", 8, 3) == torch.device("cuda", 3)
    assert runtime.rank_device("cuda:3", 8, 3) == torch.device("cuda", 3)
    assert runtime.rank_device("cuda:1", 1, 0) == torch.device("cuda", 1)  # one process: as asked
    assert runtime.rank_device("cpu", 8, 3) == torch.device("cpu")
    with pytest.raises(ValueError, match="each rank takes cuda:LOCAL_RANK"):
        runtime.rank_device("cuda:1", 2, 0)


def test_setup_without_launcher_starts_no_group(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    rt = runtime.setup("cpu")
    assert (rt.rank, rt.world_size, rt.enabled, rt.is_main) == (0, 1, False, True)
    assert not torch.distributed.is_initialized()
    assert runtime.current() == rt
    assert runtime.broadcast_object({"x": 1}, "test") == {"x": 1}
    t = torch.arange(6.0).view(3, 2)
    assert runtime.gather_rows(t, "test") is t
    runtime.barrier("test")
    runtime.cleanup(rt)


def test_work_split_covers_every_unit_once():
    for world in (1, 2, 3, 8):
        ranks = [runtime.Runtime(r, world) for r in range(world)]
        items = [u for rt in ranks for u in runtime.my_items(range(11), rt)]
        assert sorted(items) == list(range(11))
        blocks = [list(runtime.my_block(11, rt)) for rt in ranks]
        assert sum(blocks, []) == list(range(11))  # contiguous, in rank order
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_batch_size_is_global_and_divided_across_ranks():
    assert runtime.per_rank_batch(512, 8) == 64
    assert runtime.per_rank_batch(512, 1) == 512
    with pytest.raises(ValueError, match="batch_size=100 is the global batch .* by the number "
                       "of processes \\(8\\)"):  # fmt: skip
        runtime.per_rank_batch(100, 8)


def test_timeout_from_env():
    assert runtime.timeout_from_env({}) == runtime.DEFAULT_TIMEOUT_S
    assert runtime.timeout_from_env({runtime.TIMEOUT_ENV: "12.5"}) == 12.5
    for bad in ("soon", "0", "-3"):
        with pytest.raises(ValueError, match=runtime.TIMEOUT_ENV):
            runtime.timeout_from_env({runtime.TIMEOUT_ENV: bad})


def test_precision_policy(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: ())
    assert not runtime.use_bf16("auto", cpu)  # fp32 on a CPU without native bf16
    assert runtime.use_bf16("bf16", cpu) and not runtime.use_bf16("fp32", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.use_bf16("fp16", cpu)
    with runtime.autocast("bf16", cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with runtime.autocast("auto", cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_sampler_batch_from_memory():
    gib = 1 << 30
    # 80 GiB free, 40 MiB per image: 0.6 * 80 GiB / 40 MiB = 1228 -> 1024 (a power of two).
    assert batch_from_memory(80 * gib, 40 << 20) == 1024
    assert batch_from_memory(80 * gib, 1) == 2048  # capped
    assert batch_from_memory(1 << 20, 40 << 20) == 8  # floor


@pytest.mark.parametrize("world", ["1", "2"])
def test_exit_process_keeps_the_status_and_flushes_output(world):
    """Under torchrun (WORLD_SIZE > 1) exit_process skips the interpreter's teardown (os._exit),
    so it must flush what was printed; either way the exit status is the given code."""
    code = "from auggen.infra.runtime import exit_process\nprint('done', end='')\nexit_process(3)"
    env = {**os.environ, "WORLD_SIZE": world, "RANK": "0", "LOCAL_RANK": "0"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 3 and p.stdout == "done"


def test_the_job_is_set_up_once_and_handed_down(monkeypatch):
    """``setup`` once per job; a second one inside it is refused; ``using`` takes a Runtime as
    it is (nothing set up or ended) and sets up a job only for a device."""
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    with runtime.using("cpu") as rt:
        assert runtime.current() is rt and rt.device == torch.device("cpu")
        with pytest.raises(RuntimeError, match="a job is already set up .* pass its Runtime"):
            runtime.setup("cpu")
        with runtime.using(rt) as inner:
            assert inner is rt
        assert runtime.current() is rt  # handing it down ended nothing
    assert runtime.current() is not rt  # the job set up for the block ended with it
    again = runtime.setup("cpu")  # and a new one may start
    runtime.cleanup(again)
