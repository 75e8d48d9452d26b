"""The first-to-last change paired by question: per-question differences, a t interval over questions."""

from __future__ import annotations

import math

import pytest

from arenas.selfplay_paired import paired_change


def test_paired_change_over_questions_measured_at_both():
    first = {"q1": [0, 0], "q2": [1, 1], "q3": [0, 1], "q5": []}
    last = {"q1": [1, 1], "q2": [1, 1], "q3": [1, 1], "q4": [1], "q5": [1]}  # q4 and q5 are not measured at both
    d, lo, hi, n = paired_change(first, last)
    assert n == 3 and d == pytest.approx(0.5)  # differences +1, 0, +0.5
    # sd 0.5, standard error 0.5 / sqrt(3), t(0.975, df 2) = 4.303
    assert (lo, hi) == pytest.approx((0.5 - 4.303 * 0.5 / math.sqrt(3), 0.5 + 4.303 * 0.5 / math.sqrt(3)), abs=0.02)


def test_paired_change_removes_question_difficulty():
    """Hard and easy questions, each improving by one speech of two: the unpaired shares' intervals overlap, the
    paired difference is +0.5 with no spread."""
    first = {f"q{i}": [0, 0] if i % 2 else [1, 0] for i in range(8)}
    last = {f"q{i}": [1, 0] if i % 2 else [1, 1] for i in range(8)}
    d, lo, hi, n = paired_change(first, last)
    assert (d, lo, hi, n) == (0.5, 0.5, 0.5, 8)
    assert paired_change(first, {})[3] == 0 and math.isnan(paired_change(first, {})[0])
