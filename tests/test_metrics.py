"""Judge metrics."""

import math

import pytest

from arenas.metrics import (
    accuracy,
    brier,
    calibration_bins,
    ece,
    first_position_preference,
    position_bias,
    rate,
    wilson_interval,
)


def test_wilson_known_values() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3)
    assert high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_rate() -> None:
    r = rate(3, 4)
    assert r.value == 0.75 and r.low < 0.75 < r.high
    assert math.isnan(rate(0, 0).value)


def test_accuracy_tie_counts_as_wrong() -> None:
    r = accuracy([0.9, 0.5, 0.51, 0.2])
    assert r.k == 2 and r.n == 4 and r.value == 0.5


def test_brier() -> None:
    assert brier([1.0, 0.5, 0.0]) == pytest.approx((0 + 0.25 + 1) / 3)


def test_ece_calibrated_and_overconfident() -> None:
    calibrated = [0.8] * 8 + [0.2] * 2 + [0.6] * 6 + [0.4] * 4
    assert ece(calibrated) == pytest.approx(0.0, abs=1e-12)
    overconfident = [0.99] * 6 + [0.01] * 4  # claims 0.99, right 60%
    assert ece(overconfident) == pytest.approx(0.39)


def test_position_bias() -> None:
    items = [(0.7, 0.5), (0.6, 0.4)]
    assert position_bias(items) == pytest.approx(0.2)
    assert first_position_preference(items) == pytest.approx(0.1)
    assert first_position_preference([(0.3, 0.3)]) == pytest.approx(0.0)


def test_calibration_bins_of_the_reliability_plot() -> None:
    # p_correct 0.9 (right, conf 0.9), 0.95 (right), 0.2 (wrong, conf 0.8), 0.3 (wrong, conf 0.7 on an edge)
    bins = calibration_bins([0.9, 0.95, 0.2, 0.3])
    assert [(b.low, b.high, b.n, b.accuracy) for b in bins] == [(0.7, 0.8, 1, 0.0), (0.8, 0.9, 1, 0.0), (0.9, 1.0, 2, 1.0)]
    assert bins[2].confidence == pytest.approx(0.925)
    assert calibration_bins([1.0])[0].high == 1.0  # the top edge belongs to the last bin
    with pytest.raises(ValueError, match="increasing"):
        calibration_bins([0.9], edges=(0.5, 0.5, 1.0))


def test_ece_is_the_weighted_gap_of_its_calibration_bins() -> None:
    p = [0.9, 0.95, 0.2, 0.3, 0.62, 0.4]
    bins = calibration_bins(p, edges=[0.5 + 0.05 * i for i in range(11)])
    assert ece(p) == pytest.approx(sum(b.n / len(p) * abs(b.accuracy - b.confidence) for b in bins))
    # by hand: bins [0.6,0.65) {0.62 right, 0.6 wrong}, [0.7,0.75) {0.7 wrong}, [0.8,0.85) {0.8 wrong}, [0.9,0.95) {0.9 right},
    # [0.95,1] {0.95 right}
    by_hand = (2 * abs(0.5 - 0.61) + 0.7 + 0.8 + 0.1 + 0.05) / 6
    assert ece(p) == pytest.approx(by_hand)
