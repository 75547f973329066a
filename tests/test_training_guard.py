import math

import pytest
import torch
import torch.multiprocessing as mp

from auggen.infra.training_guard import LossGuard, StepLosses, TrainingDiverged


def feed(guard, losses, start=1):
    for i, x in enumerate(losses):
        guard.check(start + i, x)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_stops_from_the_first_step(bad):
    with pytest.raises(TrainingDiverged, match="at step 1: loss .* is not finite") as e:
        LossGuard().check(1, bad)
    assert e.value.step == 1 and isinstance(e.value, RuntimeError)
    g = LossGuard()
    feed(g, [1.0, 0.9])
    with pytest.raises(TrainingDiverged, match="at step 3"):
        g.check(3, bad)


def test_spike_against_the_running_median():
    g = LossGuard(factor=100)
    feed(g, [1.0, 0.8, 1.2, 0.9])
    g.check(5, 100.0)  # median 0.95 + 100 x 1 = 100.95: a big but tolerated jump
    with pytest.raises(TrainingDiverged, match=r"step 6: loss 6e\+13 exceeds 101") as e:
        g.check(6, 6e13)
    assert e.value.loss == 6e13
    # The failing loss never enters the reference.
    assert max(g.recent) == 100.0


def test_negative_and_zero_crossing_losses_are_normal():
    # EDM2's uncertainty-weighted loss falls below zero; judging by ratio would misfire there.
    g = LossGuard(factor=10)
    feed(g, [0.9, 0.4, 0.1, -0.3, -1.2, -1.8, -2.2, -2.9, -2.0, -1.5])
    g.check(11, 11.0)  # below median -1.35 + 10 x 1.35 = 12.15
    with pytest.raises(TrainingDiverged, match="step 12: loss 50 exceeds 10.8"):
        g.check(12, 50.0)  # median -1.2 + 10 x 1.2


def test_large_losses_scale_the_threshold():
    g = LossGuard(factor=100)
    feed(g, [35.0, 30.0, 28.0])  # AdaFace-like: log(classes) + s x margin
    g.check(4, 2000.0)  # 30 + 100 x 30 = 3030
    with pytest.raises(TrainingDiverged):
        g.check(5, 5000.0)


def test_warmup():
    g = LossGuard()  # warm-up 1: the first loss is the reference for the second
    g.check(1, 1e9)
    g = LossGuard(warmup=3)
    feed(g, [1.0, 500.0, 1.0])  # fewer than 3 losses before each: not judged yet
    with pytest.raises(TrainingDiverged, match="step 4"):
        g.check(4, 1e6)  # median 1 of [1, 500, 1]


def test_window_and_state_dict_round_trip():
    g = LossGuard(window=4)
    feed(g, [5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    assert g.recent == [3.0, 2.0, 1.0, 0.5]
    h = LossGuard(window=4)
    h.load_state_dict(g.state_dict())
    assert h.recent == g.recent
    for guard in (g, h):
        with pytest.raises(TrainingDiverged, match="exceeds 151.5"):
            guard.check(7, 200.0)
    h.load_state_dict(None)  # a checkpoint written before the guard
    assert h.recent == []


def test_factor_zero_turns_the_guard_off():
    g = LossGuard(factor=0)
    assert not g.enabled
    feed(g, [1.0, math.nan, 1e30])
    s = StepLosses(g)
    s.add(1, torch.tensor(math.nan))
    s.flush()
    assert s.steps == []


def test_bad_arguments():
    for kw in ({"factor": -1}, {"factor": math.nan}, {"warmup": 0}, {"warmup": 5, "window": 4}):
        with pytest.raises(ValueError):
            LossGuard(**kw)


def test_message_names_the_kept_checkpoint():
    g = LossGuard(knob="gen.divergence_factor")
    with pytest.raises(TrainingDiverged, match="no checkpoint was written before it"):
        g.check(1, math.nan)
    g.note_checkpoint(5, "/runs/x/checkpoint.json")
    with pytest.raises(TrainingDiverged) as e:
        g.check(9, math.inf)
    msg = str(e.value)
    assert "step 5, is kept: /runs/x/checkpoint.json" in msg and "may already" not in msg
    assert "gen.divergence_factor=0" in msg
    # A checkpoint written right after the update that the bad loss reveals.
    with pytest.raises(TrainingDiverged, match="may already hold the diverged weights"):
        g.check(6, math.nan)


def test_step_losses_check_in_batches_in_order():
    g = LossGuard()
    s = StepLosses(g, every=3)
    s.add(1, torch.tensor([1.0, 3.0]))  # the mean is judged
    s.add(2, torch.tensor(math.nan))
    assert g.recent == [] and s.steps == [1, 2]  # nothing checked yet: no host sync
    with pytest.raises(TrainingDiverged, match="at step 2"):
        s.add(3, torch.tensor(1.0))
    assert g.recent == [2.0] and s.steps == []
    s.add(4, torch.tensor(1.5))
    s.flush()  # an explicit flush, as before a checkpoint
    assert g.recent == [2.0, 1.5]


def _ddp_worker(rank, world, port, out_dir):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        s = StepLosses(LossGuard(), every=2, world_size=world)
        result = "finished"
        try:
            for step in range(1, 9):
                # Only rank 1 sees a NaN, at step 5; rank 0's losses are all fine.
                bad = rank == 1 and step == 5
                s.add(step, torch.tensor(math.nan if bad else 1.0))
            s.flush()
        except TrainingDiverged as e:
            result = f"step {e.step}"
        dist.barrier()  # a rank that did not raise would wait here for ever in a collective
        (out_dir / f"rank{rank}.txt").write_text(result)
    finally:
        dist.destroy_process_group()


def test_ranks_stop_together(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, tmp_path), nprocs=2, start_method="fork")
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == ["step 5"] * 2


def test_pipeline_settings_and_cli_message(monkeypatch, capsys):
    from auggen.cli import pipeline as cli
    from auggen.pipeline.overrides import apply_set
    from auggen.pipeline.presets import PRESETS

    cfg = apply_set(
        apply_set(PRESETS["micro"], "gen.divergence_factor=0"), "fr.divergence_factor=5"
    )
    assert cfg.gen.divergence_factor == 0 and cfg.fr.divergence_factor == 5
    with pytest.raises(ValueError, match="divergence_factor"):
        apply_set(cfg, "gen.divergence_factor=-1")

    def diverge(*args, **kwargs):
        LossGuard().check(7, math.nan)

    monkeypatch.setattr(cli, "run_pipeline", diverge)
    assert cli.main(["--preset", "micro", "--out", "/nonexistent/never-written"]) == 1
    err = capsys.readouterr().err
    assert "error: TrainingDiverged: training diverged at step 7" in err
    assert "Traceback" not in err
