"""The report's statistics: the 95% interval of a mean over seeds (Student t).

A setting run with several seeds is shown as the mean of their accuracies ± the half-width of the
two-sided 95% Student t interval, ``t(0.975, n - 1) * sd / sqrt(n)`` with the sample standard
deviation. The quantile comes from :func:`scipy.stats.t.ppf`; for 1 to 20 degrees of freedom it
rounds to the textbook table's three decimals (12.706, 4.303, 3.182, ..., 2.086).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache


@cache
def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"Student t needs at least 1 degree of freedom, got {df}")
    from scipy.stats import t  # imported when a report has several seeds: scipy loads slowly

    return float(t.ppf(0.975, df))


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """The two-sided 95% Student t interval of the mean of ``values`` (at least two)."""
    n = len(values)
    if n < 2:
        raise ValueError(f"an interval over seeds needs at least 2 values, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return (mean - half, mean + half)
