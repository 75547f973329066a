"""Pair selection: far / near pairs under a usage cap, blocked and sharded; Spearman's rho."""

import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from auggen.mixing.pairs import (
    cosine_distance,
    distance_correlation,
    group_distance,
    select_groups,
    select_pairs,
    spearman,
)


def brute_force(feats, n_pairs, cap, far):
    """The greedy over every unordered pair, sorted by (distance, i, j)."""
    f = feats / feats.norm(dim=1, keepdim=True)
    d = cosine_distance(f, f)
    n = len(f)
    order = sorted(
        (float(-d[a, b] if far else d[a, b]), a, b) for a in range(n) for b in range(a + 1, n)
    )
    uses, out = [0] * n, []
    for _, a, b in order:
        if uses[a] < cap and uses[b] < cap:
            out.append((a, b))
            uses[a] += 1
            uses[b] += 1
            if len(out) == n_pairs:
                break
    return torch.tensor(out, dtype=torch.long).reshape(-1, 2)


def _case(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(5, 45, (1,), generator=g))
    feats = torch.randn(n, 4, generator=g)
    if seed % 3 == 0:  # exact ties: identical classes
        feats[:3] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    cap = int(torch.randint(1, 4, (1,), generator=g))
    n_pairs = min(cap * n // 2, n * (n - 1) // 2, int(torch.randint(1, 30, (1,), generator=g)))
    return feats, n_pairs, cap


@pytest.mark.parametrize("far", [True, False])
def test_far_and_near_equal_brute_force(far):
    checked = 0
    for seed in range(24):
        feats, n_pairs, cap = _case(seed)
        want = brute_force(feats, n_pairs, cap, far)
        if len(want) < n_pairs:  # the greedy itself runs out under this cap
            continue
        # block=7: several row blocks; the candidate list starts short and must grow
        got = select_pairs(feats, n_pairs, cap, far, block=7)
        assert torch.equal(got, want), seed
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("rule", ["far", "near", "cond-far"])
@pytest.mark.parametrize("k", [2, 3])
def test_usage_cap_holds_and_groups_are_distinct(rule, k):
    feats = torch.randn(20, 6, generator=torch.Generator().manual_seed(k))
    groups = select_groups(feats, 12, k, 2 if k == 2 else 3, rule)
    cap = 2 if k == 2 else 3
    assert groups.shape == (12, k)
    assert torch.bincount(groups.flatten(), minlength=20).max() <= cap
    assert all(len(set(g)) == k for g in groups.tolist())
    assert len({tuple(sorted(g)) for g in groups.tolist()}) == 12


def test_far_pairs_are_farther_than_near_ones():
    feats = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    far = group_distance(feats, select_groups(feats, 15, 2, 2, "far"))
    near = group_distance(feats, select_groups(feats, 15, 2, 2, "near"))
    assert far.min() > near.max()
    f = feats / feats.norm(dim=1, keepdim=True)
    g = torch.tensor([[0, 1, 2]])
    want = (3 - (f[0] @ f[1] + f[0] @ f[2] + f[1] @ f[2])) / 3
    torch.testing.assert_close(group_distance(feats, g)[0], want.double())


def test_bad_settings_are_refused():
    feats = torch.randn(6, 3)
    with pytest.raises(ValueError, match="max_uses_per_identity=1 allows at most 3 pairs"):
        select_pairs(feats, 4, 1, far=True)
    with pytest.raises(ValueError, match="rule must be one of.*got 'farthest'"):
        select_groups(feats, 2, 2, 2, "farthest")


def test_spearman_matches_a_direct_rank_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))  # no ties
    d = rx - ry
    assert spearman(x, y) == pytest.approx(1 - 6 * (d**2).sum() / (50 * (50**2 - 1)))
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)
    emb = torch.randn(12, 5)
    full = distance_correlation(emb, emb)
    assert full["pairs"] == full["all_pairs"] == 66 and full["spearman_rho"] == pytest.approx(1)
    part = distance_correlation(emb, torch.randn(12, 5), max_pairs=20)
    assert part["sampled"] and part["pairs"] == 20


def _rank_worker(rank, world, port, out):
    import os

    from auggen.infra import runtime

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    rt = runtime.setup("cpu", timeout_s=60)
    try:
        feats = torch.randn(40, 6, generator=torch.Generator().manual_seed(5))
        got = [select_groups(feats, 25, 2, 2, r, block=6) for r in ("far", "near")]
        torch.save(got, out / f"rank{rank}.pt")
    finally:
        runtime.cleanup(rt)


def test_sharded_selection_on_two_gloo_ranks_equals_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_worker, args=(2, port, tmp_path), nprocs=2, start_method="fork")
    feats = torch.randn(40, 6, generator=torch.Generator().manual_seed(5))
    one = [select_groups(feats, 25, 2, 2, r, block=6) for r in ("far", "near")]
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert all(torch.equal(a, b) for a, b in zip(got, one))
