"""The attention launcher's tile choice: tuned once per (L, D, dtypes, device, N * H), never
frozen by a choice made inside CUDA graph capture (where nothing can be timed)."""

import pytest

ka = pytest.importorskip("auggen.kernels.triton.attention")


class FakeKernel:
    """Records the tile each launch used; ``kernel[grid](*args, **kw)`` like a JITFunction."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, **kw: self.launches.append((grid, kw["BLOCK_M"]))


CONFIGS = [dict(BLOCK_M=32, BLOCK_N=16), dict(BLOCK_M=64, BLOCK_N=16)]


@pytest.fixture
def tuner(monkeypatch):
    monkeypatch.setattr(ka, "_CHOSEN", {})
    monkeypatch.setattr(ka, "interpreting", lambda: False)
    timings = {32: 2.0, 64: 1.0}  # 64-row tiles are faster

    def do_bench(fn, warmup, rep):
        fn()
        return timings[kernel.launches[-1][1]]

    monkeypatch.setattr(ka.triton.testing, "do_bench", do_bench)
    kernel = FakeKernel()
    return kernel


def test_capture_does_not_freeze_the_first_config(tuner, monkeypatch):
    monkeypatch.setattr(ka, "_capturing", lambda: True)
    ka._launch(tuner, "BLOCK_M", 128, 4, (), {}, CONFIGS, ("fwd", 128))
    assert [m for _, m in tuner.launches] == [32]  # the first that fits, launched once
    assert ka._CHOSEN == {}
    monkeypatch.setattr(ka, "_capturing", lambda: False)
    tuner.launches.clear()
    ka._launch(tuner, "BLOCK_M", 128, 4, (), {}, CONFIGS, ("fwd", 128))
    assert ka._CHOSEN == {("fwd", 128, 4): CONFIGS[1]}  # timed outside capture: the fastest
    assert tuner.launches[-1] == ((4 * 2,), 64)  # grid = L / BLOCK_M * N * H


def test_cache_key_includes_batch_times_heads(tuner, monkeypatch):
    monkeypatch.setattr(ka, "_capturing", lambda: False)
    ka._launch(tuner, "BLOCK_M", 128, 4, (), {}, CONFIGS, ("fwd", 128))
    ka._launch(tuner, "BLOCK_M", 128, 96, (), {}, CONFIGS, ("fwd", 128))
    assert set(ka._CHOSEN) == {("fwd", 128, 4), ("fwd", 128, 96)}
    n = len(tuner.launches)
    ka._launch(tuner, "BLOCK_M", 128, 96, (), {}, CONFIGS, ("fwd", 128))
    assert len(tuner.launches) == n + 1  # cached: one launch, no tuning
