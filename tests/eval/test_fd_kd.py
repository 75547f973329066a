"""FD and KD against numpy brute force and closed forms."""

import itertools

import numpy as np
import pytest
import torch

from auggen.eval.fd_kd import frechet_distance, gaussian_fit, kernel_distance, mmd2_unbiased


def _brute_fd(x, y):
    """FD with the textbook formula: Tr((S_x S_y)^{1/2}) from the eigenvalues of the
    non-symmetric product S_x S_y (their square roots; the eigenvalues are real, >= 0)."""
    mx, my = x.mean(0), y.mean(0)
    sx = sum(np.outer(r - mx, r - mx) for r in x) / (len(x) - 1)
    sy = sum(np.outer(r - my, r - my) for r in y) / (len(y) - 1)
    ev = np.linalg.eigvals(sx @ sy)
    return ((mx - my) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * np.sqrt(ev.real.clip(0)).sum()


def _brute_mmd2(x, y):
    d = x.shape[1]

    def k(a, b):
        return (sum(a[t] * b[t] for t in range(d)) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_fd_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 6))
    y = rng.standard_normal((30, 6)) * [1, 2, 0.5, 1, 3, 1] + 0.7
    fd = frechet_distance(x, y)
    assert fd == pytest.approx(_brute_fd(x, y), rel=1e-9)
    assert fd > 1.0  # a real shift and scale change, not a degenerate 0
    # Torch float32 input gives the same (computed in float64 from the float32 values).
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    assert frechet_distance(xt, yt) == pytest.approx(
        _brute_fd(xt.double().numpy(), yt.double().numpy()), rel=1e-9
    )


def test_fd_closed_form_for_diagonal_gaussians():
    # Exact fits: FD = ||mu_x - mu_y||^2 + sum (sqrt(a) - sqrt(b))^2 for diagonal covariances.
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    y = 3 * x + [1.0, -1.0]
    mx, sx = gaussian_fit(x)
    my, sy = gaussian_fit(y)
    assert np.allclose(sx, np.diag([2 / 3, 8 / 3])) and np.allclose(sy, 9 * sx)
    want = (
        2.0
        + (np.sqrt(2 / 3) - 3 * np.sqrt(2 / 3)) ** 2
        + (np.sqrt(8 / 3) - 3 * np.sqrt(8 / 3)) ** 2
    )
    assert frechet_distance(x, y) == pytest.approx(want, rel=1e-12)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-12)


def test_fd_rank_deficient_more_dims_than_rows():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 12)), rng.standard_normal((7, 12)) + 0.3
    assert frechet_distance(x, y) == pytest.approx(_brute_fd(x, y), rel=1e-7)


def test_kd_exact_matches_brute_force():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((9, 4)), rng.standard_normal((7, 4)) + 0.5
    kd = kernel_distance(x, y)
    assert kd.subsets == 1 and kd.std == 0.0
    assert kd.value == pytest.approx(_brute_mmd2(x, y), rel=1e-10)
    assert kd.value > 0
    # Unbiased: for two samples of one distribution it is centred on 0, so it can go negative.
    same = [
        mmd2_unbiased(rng.standard_normal((20, 4)), rng.standard_normal((20, 4)))
        for _ in range(200)
    ]
    assert min(same) < 0 < max(same)
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))


def test_kd_subsets_average_brute_force_estimates():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((13, 3)), rng.standard_normal((11, 3)) * 2
    kd = kernel_distance(x, y, subset_size=6, subsets=4, seed=5)
    pick = np.random.default_rng(5)
    want = []
    for _ in range(4):
        a = x[pick.choice(13, 6, replace=False)]
        b = y[pick.choice(11, 6, replace=False)]
        want.append(_brute_mmd2(a, b))
    assert kd.subsets == 4
    assert kd.value == pytest.approx(np.mean(want), rel=1e-10)
    assert kd.std == pytest.approx(np.std(want), rel=1e-10)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="same width"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="y must be"):
        kernel_distance(np.zeros((3, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="x holds NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))
