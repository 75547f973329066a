"""generate.sources: the paper's pairs (k = 2) and Dirichlet mixes of k >= 3 identities."""

from dataclasses import replace

import pytest
import torch

from auggen.mixing import mix_conditions
from auggen.pipeline.config import GenerateConfig
from auggen.pipeline.leakage import _sources
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
