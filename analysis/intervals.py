"""Confidence intervals for the numbers analysis reports: t-intervals and bootstrap.

A mean over repeated seeds gets a Student-t interval; a difference of two such means gets a
Welch interval (the two models need not have equal variances); anything else (an effect
averaged over ablation cells) gets a seeded percentile bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval; ``n`` is the number of observations behind it."""

    value: float
    low: float
    high: float
    n: int
    method: str

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def text(self) -> str:
        if np.isnan(self.low):
            return f"{self.value:.4f} (n={self.n}, no interval)"
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}] (n={self.n}, {self.method})"


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Estimate:
    """Mean with a Student-t interval; one value gives the value and no interval."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "t")
    mean = float(x.mean())
    if len(x) < 2:
        return Estimate(mean, float("nan"), float("nan"), 1, "t")
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return Estimate(mean, mean - half, mean + half, len(x), "t")


def difference_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Estimate:
    """mean(a) − mean(b) with a Welch interval (Welch–Satterthwaite degrees of freedom)."""
    x, y = (np.asarray(v, dtype=float) for v in (a, b))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    n = len(x) + len(y)
    if len(x) == 0 or len(y) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), n, "welch")
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Estimate(diff, float("nan"), float("nan"), n, "welch")
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = np.sqrt(va + vb)
    if se == 0:
        return Estimate(diff, diff, diff, n, "welch")
    dof = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    return Estimate(diff, diff - half, diff + half, n, "welch")


def bootstrap(
    statistic: Callable[[np.random.Generator | None], float],
    n: int,
    resamples: int = 1000,
    level: float = LEVEL,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap: ``statistic(None)`` is the estimate, ``statistic(rng)`` one resample."""
    value = float(statistic(None))
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng) for _ in range(resamples)], dtype=float)
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return Estimate(value, float("nan"), float("nan"), n, "bootstrap")
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(value, float(low), float(high), n, "bootstrap")
