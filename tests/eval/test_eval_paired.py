import math
import statistics

import numpy as np
import pytest

from auggen.eval import paired_difference, t_quantile


@pytest.mark.parametrize(
    "df,q975",
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (10, 2.228), (30, 2.042)],
)
def test_t_quantile_matches_tables(df, q975):
    assert t_quantile(0.975, df) == pytest.approx(q975, abs=5e-4)


def test_t_quantile_shape():
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-12)
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))
    assert t_quantile(0.95, 1) == pytest.approx(6.3138, abs=1e-4)  # tan(0.45 pi), Cauchy
    assert t_quantile(0.995, 5) == pytest.approx(4.0321, abs=1e-4)
    # Large df -> the normal quantile.
    z = statistics.NormalDist().inv_cdf(0.975)
    # Large df: the Cornish-Fisher expansion around the normal quantile (error ~ 1/df^3).
    v = 2000
    cf = z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
    assert t_quantile(0.975, v) == pytest.approx(cf, abs=1e-8)
    assert t_quantile(0.975, 2000) > z
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_quantile(0.9, 0)


@pytest.mark.parametrize("n,seed", [(2, 0), (3, 1), (5, 2), (10, 3)])
def test_paired_difference_against_direct_computation(n, seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(0.9, 0.02, n)
    new = base + rng.normal(0.005, 0.01, n)
    d = new - base
    t = {2: 12.706, 3: 4.303, 5: 2.776, 10: 2.262}[n]  # table values for df = n - 1
    half = t * np.std(d, ddof=1) / math.sqrt(n)
    got = paired_difference(new.tolist(), base.tolist())
    assert got.n == n and got.level == 0.95
    assert got.mean == pytest.approx(np.mean(d), abs=1e-15)
    # Table t values have 3 decimals: the half-width agrees to that, the centre exactly.
    assert (got.high - got.low) / 2 == pytest.approx(half, rel=2e-4)
    assert (got.high + got.low) / 2 == pytest.approx(np.mean(d), abs=1e-15)
    assert got.verdict == (
        "better" if got.low > 0 else "worse" if got.high < 0 else "no clear difference"
    )
    assert got.low < got.high


def test_verdicts():
    # +1.75 points with a noisy second seed: the interval straddles zero.
    d = paired_difference([0.80, 0.85], [0.80, 0.815])
    assert d.mean == pytest.approx(0.0175) and d.low < 0 < d.high
    assert d.verdict == "no clear difference"
    assert paired_difference([0.9, 0.91, 0.92], [0.8, 0.82, 0.81]).verdict == "better"
    assert paired_difference([0.7, 0.71, 0.72], [0.8, 0.82, 0.81]).verdict == "worse"
    one = paired_difference([0.9], [0.8])
    assert one.low is None and one.high is None and "one seed" in one.verdict
    # Two equal differences: a zero-width interval is no evidence (the demo saw -1.75, -1.75).
    assert "no verdict" in paired_difference([0.5, 0.5], [0.5, 0.5]).verdict
    assert "no verdict" in paired_difference([0.80, 0.81], [0.8175, 0.8275]).verdict
    assert paired_difference([0.8, 0.8, 0.8], [0.7, 0.7, 0.7]).verdict == "better"
    with pytest.raises(ValueError, match="pair"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="no paired"):
        paired_difference([], [])
