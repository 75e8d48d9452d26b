"""Bradley-Terry ratings."""

import math

import numpy as np
import pytest

from arenas.ratings import fit_bradley_terry, rate_players


def _simulate(strengths: dict[str, float], n: int, seed: int) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(seed)
    names = sorted(strengths)
    games = []
    for _ in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        pa = 1 / (1 + math.exp(strengths[names[b]] - strengths[names[a]]))
        games.append((names[a], names[b], float(rng.random() < pa)))
    return games


def test_two_players_75_percent() -> None:
    games = [("A", "B", 1.0)] * 300 + [("A", "B", 0.0)] * 50 + [("B", "A", 1.0)] * 50
    theta = fit_bradley_terry(games)
    assert theta["A"] - theta["B"] == pytest.approx(math.log(3), abs=0.01)
    assert theta["A"] + theta["B"] == pytest.approx(0.0, abs=1e-9)


def test_ties_count_half() -> None:
    theta = fit_bradley_terry([("A", "B", 0.5)] * 10)
    assert theta["A"] == pytest.approx(theta["B"])


def test_transitive_order_recovered() -> None:
    truth = {"strong": 1.0, "mid": 0.0, "weak": -1.0}
    ratings = rate_players(_simulate(truth, 600, seed=3), n_boot=50, seed=0)
    assert [r.player for r in ratings] == ["strong", "mid", "weak"]
    assert sum(r.games for r in ratings) == 1200


def test_interval_contains_truth() -> None:
    truth = {"a": 0.8, "b": 0.2, "c": -0.3, "d": -0.7}  # mean zero, like the fit
    covered = 0
    for sim in range(10):
        for r in rate_players(_simulate(truth, 800, seed=sim), n_boot=60, seed=1):
            covered += r.low <= truth[r.player] <= r.high
            assert r.elo == pytest.approx(1000 + r.theta * 400 / math.log(10))
            assert r.elo_low < r.elo < r.elo_high
    assert covered >= 32  # 40 intervals at a nominal 95%; a broken interval covers far fewer


def test_undefeated_player_stays_finite() -> None:
    games = [("A", "B", 1.0)] * 20 + [("B", "C", 1.0)] * 10 + [("C", "B", 1.0)] * 10
    theta = fit_bradley_terry(games)
    assert all(math.isfinite(t) for t in theta.values())
    assert theta["A"] > theta["B"] and theta["A"] < 50
    top = rate_players(games, n_boot=20)[0]
    assert top.player == "A" and top.score == 1.0 and math.isfinite(top.high)


def test_deterministic_with_seed() -> None:
    games = _simulate({"x": 0.5, "y": 0.0, "z": -0.5}, 200, seed=11)
    assert rate_players(games, n_boot=30, seed=5) == rate_players(games, n_boot=30, seed=5)
    assert rate_players(games, n_boot=30, seed=5) != rate_players(games, n_boot=30, seed=6)


def test_bad_input_named() -> None:
    with pytest.raises(ValueError, match="game 1"):
        fit_bradley_terry([("A", "B", 1.0), ("A", "B", 2.0)])
    assert fit_bradley_terry([]) == {}
