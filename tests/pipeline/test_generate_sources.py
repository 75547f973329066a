"""generate.sources: the paper's pairs (k = 2) and Dirichlet mixes of k >= 3 identities."""

from dataclasses import replace

import pytest
import torch

from auggen.analysis.leakage import _sources
from auggen.mixing import mix_conditions
from auggen.pipeline.config import GenerateConfig
from auggen.pipeline.presets import PRESETS
from auggen.pipeline.stages.generate import identity_conditions, identity_sources


def test_two_sources_are_the_papers_mix():
    g = GenerateConfig(new_identities=6, seed=3)
    src, w = identity_sources(g, 10, 0.7, 0.9)
    assert src.shape == (6, 2) and (src[:, 0] != src[:, 1]).all()
    cond = identity_conditions(src, w, 10)
    assert torch.equal(cond, mix_conditions(src[:, 0], src[:, 1], 0.7, 0.9, 10))


def test_k_sources_mix_distinct_classes_with_dirichlet_weights():
    g = GenerateConfig(new_identities=50, sources=3, concentration=2.0, seed=1)
    src, w = identity_sources(g, 10, 0.7, 0.9)
    assert src.shape == w.shape == (50, 3)
    assert all(len(set(row)) == 3 for row in src.tolist())
    torch.testing.assert_close(w.sum(1), torch.full((50,), 1.6))  # the chosen cell's mass
    assert (w > 0).all() and w.std() > 0
    cond = identity_conditions(src, w, 10)
    for n in range(50):
        assert set(cond[n].nonzero().flatten().tolist()) == set(src[n].tolist())
    again = identity_sources(g, 10, 0.7, 0.9)
    assert torch.equal(again[0], src) and torch.equal(again[1], w)  # seeded
    row = {"source_i": 1, "source_j": 2, "sources": "1;2;7"}
    assert _sources(row) == {1, 2, 7} and _sources({"source_i": 4, "source_j": 5}) == {4, 5}


def test_bad_source_settings_are_refused():
    cfg = PRESETS["micro"]
    with pytest.raises(ValueError, match="generate.sources must be >= 2"):
        replace(cfg, generate=replace(cfg.generate, sources=1)).validate(device=False)
    with pytest.raises(ValueError, match="generate.concentration must be > 0"):
        replace(cfg, generate=replace(cfg.generate, concentration=0.0)).validate(device=False)
    with pytest.raises(ValueError, match="exceeds the 4 original identities"):
        identity_sources(GenerateConfig(sources=5), 4, 0.5, 0.5)


def test_score_mixing_weights_are_convex():
    g = GenerateConfig(new_identities=5, mix="score", seed=3)
    src, w = identity_sources(g, 10, 0.7, 0.9)
    assert torch.equal(src, identity_sources(GenerateConfig(new_identities=5, seed=3), 10, 0, 0)[0])
    assert torch.equal(w, torch.full((5, 2), 0.5, dtype=torch.float64))  # lambda = 0.5
    g3 = replace(g, sources=3, concentration=2.0)
    src, w = identity_sources(g3, 10, 0.7, 0.9)
    torch.testing.assert_close(w.sum(1), torch.ones(5, dtype=torch.float64), atol=1e-12, rtol=0)
    src, w = identity_sources(replace(g, weights=(0.7, 0.3)), 10, 0.7, 0.9)
    assert torch.equal(w, torch.tensor([[0.7, 0.3]] * 5, dtype=torch.float64))


def test_far_pairs_in_the_pipeline_follow_the_class_vectors():
    feats = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    g = GenerateConfig(new_identities=4, pairs="far", max_uses_per_identity=1)
    src, w = identity_sources(g, 10, 0.7, 0.9, feats)
    from auggen.mixing.pairs import select_groups

    assert torch.equal(src, select_groups(feats, 4, 2, 1, "far"))
    assert torch.bincount(src.flatten(), minlength=10).max() == 1
    with pytest.raises(ValueError, match="needs the class vectors"):
        identity_sources(g, 10, 0.7, 0.9)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"mix": "scores"}, "generate.mix must be one of .*got 'scores'"),
        ({"pairs": "farthest"}, "generate.pairs must be one of .*got 'farthest'"),
        ({"mix": "score", "weights": (0.7, 0.6)}, "generate.weights=\\[0.7, 0.6\\] must sum to 1"),
        ({"mix": "score", "weights": (1.5, -0.5)}, "generate.weights=\\[1.5, -0.5\\] must each"),
        ({"mix": "score", "weights": (0.5, 0.25, 0.25)}, "has 3 values, generate.sources=2"),
        ({"weights": (0.5, 0.5)}, "generate.weights=\\[0.5, 0.5\\] is for generate.mix=score"),
        ({"mix": "score", "alpha": 0.5, "beta": 0.5}, "with generate.mix=score set"),
        ({"max_uses_per_identity": -1}, "max_uses_per_identity must be >= 0"),
        ({"run_grid": True}, "generate.run_grid is for generate.mix=score"),
    ],
)
def test_bad_mixing_settings_are_refused_naming_them(setting, message):
    cfg = PRESETS["micro"]
    with pytest.raises(ValueError, match=message):
        replace(cfg, generate=replace(cfg.generate, **setting)).validate(device=False)


def test_new_settings_at_their_defaults_leave_fingerprints_alone():
    from auggen.pipeline.stage import external_inputs, stage_config
    from auggen.pipeline.stages import STAGES

    cfg = PRESETS["orl-tiny"]
    section = stage_config(STAGES["generate"], cfg)["generate"]
    new = {"mix", "weights", "pairs", "max_uses_per_identity", "run_grid"}
    assert not new & set(section)
    assert external_inputs(STAGES["grid"], cfg) is None
    score = replace(cfg, generate=replace(cfg.generate, mix="score", pairs="far"))
    section = stage_config(STAGES["generate"], score)["generate"]
    assert section["mix"] == "score" and section["pairs"] == "far"
    assert external_inputs(STAGES["grid"], score) is not None  # a skipped grid differs
    asked = replace(score, generate=replace(score.generate, run_grid=True))
    assert external_inputs(STAGES["grid"], asked) is None  # the search itself: the same grid
