"""Uncertainty of reported numbers: bootstrap intervals of accuracies, spread over seeds.

An accuracy is the mean of a 0/1 vector over images. Resampling n images with replacement
draws each one correct with probability k/n independently, so the bootstrap mean of a resample
is distributed exactly as Binomial(n, k/n) / n: the bootstrap depends on the images only through
the count k, and is computed here from (k, n) alone. That is what lets intervals be added to a
published results.json, which holds accuracies and set sizes but no per-image outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

from nbutils import checks

N_BOOT = 1000
LEVEL = 0.95


def bootstrap_count_ci(
    n_correct: int, n: int, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy n_correct / n over n images.

    Each of the n_boot resample means is a Binomial(n, n_correct / n) draw over n (module
    docstring), from numpy's default_rng(seed); the interval is their (1 - level) / 2 and
    (1 + level) / 2 quantiles (e.g. the 25th and 975th smallest of 1000).
    """
    n = checks.integer("n", n, least=1)
    n_correct = checks.integer("n_correct", n_correct, least=0)
    if n_correct > n:
        raise ValueError(f"n_correct must be <= n = {n}, got {n_correct}")
    n_boot = checks.integer("n_boot", n_boot, least=1)
    seed = checks.integer("seed", seed, least=0)
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    means = np.random.default_rng(seed).binomial(n, n_correct / n, size=n_boot) / n
    # Order statistics of the resample means, not interpolations: the bounds are accuracies
    # some resample reaches, on the same k / n grid as the estimate.
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(low), float(high)


def bootstrap_ci(
    correct: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy of a boolean per-image vector.

    Identical, for the same seed, to `bootstrap_count_ci(correct.sum(), len(correct))`.
    """
    correct = np.asarray(correct)
    if correct.ndim != 1 or len(correct) == 0 or correct.dtype != np.bool_:
        raise ValueError(
            f"correct must be a non-empty 1-D bool array, got {correct.dtype} {correct.shape}"
        )
    return bootstrap_count_ci(int(correct.sum()), len(correct), n_boot, seed, level)


def count_of(accuracy: float, n: int) -> int:
    """The number of correct images behind `accuracy` over n images (ValueError if none fits)."""
    n = checks.integer("n", n, least=1)
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy must lie in [0, 1], got {accuracy!r}")
    k = round(accuracy * n)
    # Accuracies are stored as k / n in float64: anything further off is not over n images.
    if abs(k - accuracy * n) > 1e-6 * max(n, 1):
        raise ValueError(f"accuracy {accuracy!r} is not a count over n = {n} images")
    return k


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample sd (ddof=1), min, max, count and the values over seeds, NaNs dropped.

    The one summary over seeds of the package. A statistic that is undefined is NaN: every one
    for no value, the sd for a single value.
    """
    numbers = all(isinstance(v, (int, float, np.integer, np.floating))
                  and not isinstance(v, (bool, np.bool_)) for v in values)
    if not numbers:
        raise ValueError(f"values: must be numbers (NaN where missing), got {values!r}")
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan, "n": 0,
                "values": []}
    sd = float(v.std(ddof=1)) if v.size >= 2 else math.nan
    return {"mean": float(v.mean()), "sd": sd, "min": float(v.min()), "max": float(v.max()),
            "n": int(v.size), "values": v.tolist()}


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean over seeds (sample sd, n - 1 dof); None below 2 values."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(x) < 2:
        return None
    half = scipy.stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)
