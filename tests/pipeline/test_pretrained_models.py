"""pretrained.gen / pretrained.fr: the pipeline starts from models brought from elsewhere."""

import os
from dataclasses import replace

import pytest
import torch

from auggen.generator.train import load_generator
from auggen.pipeline.driver import run_pipeline
from auggen.pipeline.presets import PRESETS
from auggen.pipeline.stages import STAGES

MICRO = replace(PRESETS["micro"], threads=1, progress=False)


def _quiet(msg):
    pass


def _with(cfg, **kw):
    return replace(cfg, pretrained=replace(cfg.pretrained, **kw))


@pytest.fixture(scope="module")
def donor(tmp_path_factory):
    out = tmp_path_factory.mktemp("donor")
    run_pipeline(MICRO, out, STAGES, stages=["data", "train_gen", "train_fr"], log=_quiet)
    return out


def test_use_mode_takes_the_models_instead_of_training(donor, tmp_path):
    gen, fr = donor / "train_gen" / "model", donor / "train_fr" / "baseline" / "seed0"
    cfg = _with(MICRO, gen=str(gen), fr=str(fr))
    status = run_pipeline(cfg, tmp_path, STAGES, stages=["data", "train_gen", "train_fr", "grid"])
    assert status["grid"] == "ran"
    a, b = load_generator(gen), load_generator(tmp_path / "train_gen" / "model")
    assert a.state_dict().keys() == b.state_dict().keys()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not (tmp_path / "train_gen" / "model" / "history.json").exists()  # not trained
    # The same config again skips; a replaced checkpoint file reruns what reads it.
    again = run_pipeline(cfg, tmp_path, STAGES, stages=["data", "train_gen"], log=_quiet)
    assert again["train_gen"] == "skipped"
    st = (gen / "checkpoint.json").stat()
    os.utime(gen / "checkpoint.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = run_pipeline(cfg, tmp_path, STAGES, stages=["data", "train_gen"], log=_quiet)
    assert again["train_gen"] == "ran"


def test_without_pretrained_models_fingerprints_are_unchanged(donor, tmp_path):
    status = run_pipeline(MICRO, donor, STAGES, stages=["data", "train_gen", "train_fr"])
    assert set(status.values()) == {"skipped", "not selected"}


def test_init_mode_starts_fr_training_from_the_weights(donor, tmp_path):
    from auggen.data.index import open_index
    from auggen.recognition.train import train_fr

    fr_dir = donor / "train_fr" / "baseline" / "seed0"
    cfg = _with(MICRO, fr=str(fr_dir), fr_mode="init")
    from auggen.pipeline.pretrained import fr_init
    from auggen.pipeline.stages.common import fr_config

    init = fr_init(cfg)
    data = open_index(donor / "data" / "train.index.json")
    # A vanishing learning rate: what training returns is what it started from.
    one = replace(fr_config(MICRO, 0), epochs=1, lr=1e-12)
    warm = train_fr(one, data, tmp_path / "warm", progress=False, init=init).state_dict()
    cold = train_fr(one, data, tmp_path / "cold", progress=False).state_dict()
    convs = [k for k in init if k.endswith("conv1.weight") or k.endswith("conv2.weight")]
    assert convs
    for k in convs:
        torch.testing.assert_close(warm[k], init[k], rtol=0, atol=1e-6)
        assert not torch.allclose(cold[k], init[k])
    bad = replace(fr_config(MICRO, 0), width=4, epochs=1)
    with pytest.raises(ValueError, match="init weights do not fit fr.backbone"):
        train_fr(bad, data, tmp_path / "bad", progress=False, init=init)


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="pretrained.gen_mode must be 'use' or 'init'"):
        _with(MICRO, gen_mode="copy").validate(device=False)
    with pytest.raises(FileNotFoundError, match="pretrained.fr: .*nope does not exist"):
        _with(MICRO, fr=str(tmp_path / "nope")).validate(device=False)


def test_init_mode_starts_generator_training_from_the_weights(donor, tmp_path):
    from auggen.data.index import open_index
    from auggen.generator.checkpoint import load_checkpoint
    from auggen.generator.train import train_generator

    init = load_generator(donor / "train_gen" / "model").state_dict()
    data = open_index(donor / "data" / "train.index.json")
    cfg = replace(MICRO.gen, steps=2, lr=1e-12, checkpoint_every=2)
    train_generator(cfg, data, tmp_path / "warm", progress=False, init=init)
    net = {k[4:]: v for k, v in load_checkpoint(tmp_path / "warm")[1].items() if k[:4] == "net."}

    # EDM2 renormalises each weight row in training (forced weight normalisation), and the
    # donor's EMA rows are not exactly unit: compare directions, and 1-d gains as they are.
    def rows(t):
        return torch.nn.functional.normalize(t.flatten(1), dim=1) if t.ndim > 1 else t

    for k, v in init.items():
        torch.testing.assert_close(rows(net[k]), rows(v), rtol=0, atol=1e-5)
