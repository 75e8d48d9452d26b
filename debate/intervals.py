"""Confidence intervals shared by every layer (judges/ reports them too, and must not import arenas/)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n == 0."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def difference_interval(k1: float, n1: int, k2: float, n2: int, z: float = 1.96) -> tuple[float, float, float]:
    """The difference p2 - p1 of two independent proportions with its Newcombe hybrid score interval
    (Newcombe 1998, method 10: built from each proportion's Wilson interval); nans when a count is 0."""
    if n1 == 0 or n2 == 0:
        return (math.nan, math.nan, math.nan)
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(k1, n1, z), wilson_interval(k2, n2, z)
    d = p2 - p1
    return (d, d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2))


def t_quantile(df: int, z: float = 1.96) -> float:
    """Student's t quantile with `df` degrees of freedom at the normal quantile `z` (1.96: the 0.975 quantile),
    by the Cornish-Fisher expansion of Abramowitz and Stegun 26.7.5: within 0.004 of the exact value at 3 degrees
    of freedom and 0.001 from 4; at 1.96 the values for 1 and 2, where the expansion fails, are the exact ones."""
    if df < 1:
        raise ValueError(f"t_quantile needs at least 1 degree of freedom, got {df}")
    if abs(z - 1.96) < 1e-9 and df <= 2:
        return (12.7062, 4.3027)[df - 1]  # exact for the 0.975 quantile, where the expansion is poor
    g = ((z**3 + z) / 4,
         (5 * z**5 + 16 * z**3 + 3 * z) / 96,
         (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(gk / df ** (k + 1) for k, gk in enumerate(g))


def mean_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """The mean of `values` with its Student t interval (95% for z = 1.96); nans for no value, and the mean
    with nans for one (no spread to measure)."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = math.fsum(values) / n
    if n == 1:
        return (mean, math.nan, math.nan)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1, z) * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)
