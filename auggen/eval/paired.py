"""Paired comparison over seeds: mean difference and a Student-t confidence interval.

Two models trained with the same seeds share that seed's data order and initialisation, so
their per-seed differences cancel much of the seed-to-seed noise. A verdict should rest on
those differences, not on how two means compare with their stds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4).

    The finite series is exact for integer degrees of freedom, so no scipy is needed.
    """
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        total, term = 1.0, 1.0
        for k in range(1, (df - 1) // 2):  # (2·4···2k) / (3·5···(2k+1)) cos^2k
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        series = s * math.cos(theta) * total if df > 1 else 0.0
        return 2.0 / math.pi * (theta + series)
    total, term = 1.0, 1.0
    for k in range(1, df // 2):  # (1·3···(2k-1)) / (2·4···2k) cos^2k
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom, ``p`` in (0, 1).

    Inverts the exact CDF by bisection (about 1e-12 relative); e.g. t_quantile(0.975, 4)
    = 2.776.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if int(df) != df or df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    df = int(df)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    mass = 2.0 * p - 1.0  # P(|T| < q) for the upper quantile q
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < mass:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_mass(mid, df) < mass:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``new - base`` over paired seeds and its ``level`` Student-t interval.

    ``low``/``high`` are None with fewer than two pairs: one difference has no spread.
    """

    n: int
    mean: float
    low: float | None
    high: float | None
    level: float

    @property
    def verdict(self) -> str:
        """Better or worse only when the interval excludes zero (higher = better)."""
        if self.low is None or self.high is None:
            return "no verdict possible from one seed"
        if self.high - self.low <= 1e-12 and self.n < 3:
            # Two equal differences give a zero-width interval that only reflects chance
            # (accuracies move in discrete steps); it is no evidence of a consistent effect.
            return "no verdict: 2 equal paired differences (too few seeds to judge)"
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "no clear difference"


def paired_difference(
    new: Sequence[float], base: Sequence[float], level: float = 0.95
) -> PairedDifference:
    """Paired comparison of ``new[i]`` with ``base[i]`` (same seed i).

    Interval: mean ± t_{(1+level)/2, n-1} · s / sqrt(n), s the sample std (ddof=1) of the
    differences.
    """
    if len(new) != len(base):
        raise ValueError(f"new and base must pair up, got {len(new)} and {len(base)} values")
    if not len(new):
        raise ValueError("no paired values")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = [float(a) - float(b) for a, b in zip(new, base)]
    n = len(d)
    mean = math.fsum(d) / n
    if n < 2:
        return PairedDifference(n, mean, None, None, level)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return PairedDifference(n, mean, mean - half, mean + half, level)
