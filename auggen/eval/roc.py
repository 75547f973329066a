"""ROC operating points: TAR at a fixed FAR (the IJB-B/C 1:1 report)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from auggen.eval.verification import as_numpy

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def threshold_at_far(impostor_scores, far: float) -> float:
    """Smallest threshold t with #(impostor > t) / #impostor <= far.

    That t is the (k+1)-th largest impostor score for k = floor(far * #impostor) (ties can
    only lower the count above it); far >= 1 returns -inf (accept everything). For
    far < 1 / #impostor, t is the largest impostor score: no impostor is accepted.
    """
    imp = np.sort(as_numpy(impostor_scores, np.float64))[::-1]
    if len(imp) == 0:
        raise ValueError("impostor_scores is empty: FAR is undefined")
    if not 0 <= far <= 1:
        raise ValueError(f"far must be in [0, 1], got {far}")
    k = int(np.floor(far * len(imp) + 1e-9))
    return float("-inf") if k >= len(imp) else float(imp[k])


def tar_at_far(scores, issame, far: float | Sequence[float]):
    """True accept rate (genuine score > t) at the threshold of ``threshold_at_far``.

    ``far`` a float gives a float; a sequence gives a numpy array of the same length.
    """
    scores, issame = as_numpy(scores, np.float64), as_numpy(issame, bool)
    if scores.ndim != 1 or scores.shape != issame.shape:
        raise ValueError(
            f"scores and issame must be (N,) of equal length, got {scores.shape} {issame.shape}"
        )
    gen = np.sort(scores[issame])
    if len(gen) == 0:
        raise ValueError("issame has no genuine pairs: TAR is undefined")
    imp = scores[~issame]
    fars = np.atleast_1d(np.asarray(far, dtype=np.float64))
    tars = np.array(
        [
            1.0 - np.searchsorted(gen, threshold_at_far(imp, f), side="right") / len(gen)
            for f in fars
        ]
    )
    return float(tars[0]) if np.ndim(far) == 0 else tars


def far_key(far: float) -> str:
    """Metric name: "TAR@FAR=1e-4" for powers of ten, else "TAR@FAR=0.25"."""
    e = np.log10(far) if far > 0 else 0.5
    return f"TAR@FAR=1e{int(round(e))}" if abs(e - round(e)) < 1e-9 else f"TAR@FAR={far:g}"


def tar_at_far_table(scores, issame, fars: Sequence[float] = IJB_FARS) -> dict[str, float]:
    """{"TAR@FAR=1e-6": ..., ...}; FARs below 1 / #impostor are left out (not measurable)."""
    n_imp = int((~as_numpy(issame, bool)).sum())
    usable = [f for f in fars if f * n_imp >= 1]
    tars = tar_at_far(scores, issame, usable) if usable else []
    return {far_key(f): float(t) for f, t in zip(usable, tars)}
