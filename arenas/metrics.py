"""Judge metrics: accuracy with Wilson intervals, calibration (Brier, ECE) and position bias.

Inputs are `p_correct`, the judge's probability for the correct answer of each item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


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


@dataclass(frozen=True)
class Rate:
    """A proportion k / n with its 95% Wilson interval."""

    k: float
    n: int
    value: float
    low: float
    high: float


def rate(k: float, n: int) -> Rate:
    """k successes out of n as a Rate (value nan when n == 0)."""
    low, high = wilson_interval(k, n)
    return Rate(k=k, n=n, value=k / n if n else math.nan, low=low, high=high)


def _probs(p_correct: Sequence[float]) -> np.ndarray:
    p = np.asarray(p_correct, dtype=float).reshape(-1)
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("probabilities must lie in [0, 1]")
    return p


def accuracy(p_correct: Sequence[float]) -> Rate:
    """Share of items judged correctly: p > 0.5 (exactly 0.5 counts as not correct)."""
    p = _probs(p_correct)
    return rate(float(np.sum(p > 0.5)), int(p.size))


def brier(p_correct: Sequence[float]) -> float:
    """Brier score: mean of (1 - p_correct)^2; nan for no items."""
    p = _probs(p_correct)
    return float(np.mean((1.0 - p) ** 2)) if p.size else math.nan


def ece(p_correct: Sequence[float], bins: int = 10) -> float:
    """Expected calibration error of the judge's chosen answer.

    The confidence of an item is max(p, 1 - p), the probability of the answer the judge picks,
    and it is correct when p > 0.5. Confidences lie in [0.5, 1], which is split into `bins` equal
    bins; ECE = sum over bins of (bin size / n) * |accuracy in bin - mean confidence in bin|.
    """
    if bins < 1:
        raise ValueError(f"ece needs bins >= 1, got {bins}")
    p = _probs(p_correct)
    if p.size == 0:
        return math.nan
    conf = np.maximum(p, 1.0 - p)
    correct = (p > 0.5).astype(float)
    which = np.minimum(((conf - 0.5) * 2 * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() / p.size * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)


def _orders(p_orders: Sequence[tuple[float, float]]) -> np.ndarray:
    a = np.asarray(p_orders, dtype=float).reshape(-1, 2)
    if np.any((a < 0) | (a > 1)) or np.any(np.isnan(a)):
        raise ValueError("probabilities must lie in [0, 1]")
    return a


def position_bias(p_orders: Sequence[tuple[float, float]]) -> float:
    """Mean |p1 - p2| over items, p1/p2 = p(answer 0) when shown first/second; nan for none."""
    a = _orders(p_orders)
    return float(np.mean(np.abs(a[:, 0] - a[:, 1]))) if len(a) else math.nan


def first_position_preference(p_orders: Sequence[tuple[float, float]]) -> float:
    """Extra probability the first-shown answer gets: mean of (p1 + (1 - p2)) / 2 - 0.5."""
    a = _orders(p_orders)
    return float(np.mean((a[:, 0] + 1.0 - a[:, 1]) / 2 - 0.5)) if len(a) else math.nan
