"""Judge metrics: accuracy with Wilson intervals, calibration (Brier, ECE) and position bias.

Inputs are `p_correct`, the judge's probability for the correct answer of each item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from debate.intervals import wilson_interval  # in debate/ so that judges/ can use it too


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


@dataclass(frozen=True)
class CalibrationBin:
    """One reliability bin: the judge's confidence in its chosen answer against how often it was right."""

    low: float
    high: float
    n: int
    confidence: float  # mean probability given to the chosen answer
    accuracy: float  # fraction of those choices that were right


UI_EDGES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # the reliability plot's bins, coarse enough for a few human verdicts


def calibration_bins(p_correct: Sequence[float], edges: Sequence[float] = UI_EDGES) -> list[CalibrationBin]:
    """Reliability bins of the judge's chosen answers; bins with no item are left out.

    The confidence of an item is max(p, 1 - p), the probability of the answer the judge picks, and it
    is correct when p > 0.5. Bin i holds confidences in [edges[i], edges[i + 1]), the last bin its
    upper edge too.
    """
    if len(edges) < 2 or any(b <= a for a, b in zip(edges[:-1], edges[1:])):
        raise ValueError(f"calibration edges must be at least two increasing numbers, got {list(edges)}")
    p = _probs(p_correct)
    conf = np.maximum(p, 1.0 - p)
    correct = p > 0.5
    which = np.minimum(np.searchsorted(np.asarray(edges, dtype=float), conf, side="right") - 1, len(edges) - 2)
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sel = which == i
        if sel.any():
            out.append(CalibrationBin(float(lo), float(hi), int(sel.sum()), float(conf[sel].mean()), float(correct[sel].mean())))
    return out


def ece(p_correct: Sequence[float], bins: int = 10) -> float:
    """Expected calibration error of the judge's chosen answer: `bins` equal bins of confidence over
    [0.5, 1] (see `calibration_bins`); ECE = sum over bins of (bin size / n) * |accuracy - mean confidence|.
    """
    if bins < 1:
        raise ValueError(f"ece needs bins >= 1, got {bins}")
    p = _probs(p_correct)
    if p.size == 0:
        return math.nan
    edges = [0.5 + 0.5 * i / bins for i in range(bins + 1)]
    return float(sum(b.n / p.size * abs(b.accuracy - b.confidence) for b in calibration_bins(p, edges)))


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
