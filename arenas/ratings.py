"""Bradley-Terry ratings by maximum likelihood with bootstrap 95% intervals; Elo only for display."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

Game = tuple[str, str, float]  # (player_i, player_j, score_i): 1 win for i, 0 loss, 0.5 tie

ELO_BASE = 1000.0
ELO_SCALE = 400.0 / math.log(10.0)


@dataclass(frozen=True)
class Rating:
    """One player's Bradley-Terry strength with its bootstrap 95% interval."""

    player: str
    theta: float
    low: float
    high: float
    elo: float
    elo_low: float
    elo_high: float
    games: int
    score: float  # mean score over the player's games


def _encode(games: Sequence[Game]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    players = sorted({g[0] for g in games} | {g[1] for g in games})
    where = {p: k for k, p in enumerate(players)}
    for n, (a, b, s) in enumerate(games):
        if a == b:
            raise ValueError(f"game {n}: player {a!r} plays itself; drop the game")
        if not 0.0 <= float(s) <= 1.0:
            raise ValueError(f"game {n}: score {s!r} must be in [0, 1] (1 win, 0.5 tie, 0 loss)")
    i = np.array([where[g[0]] for g in games], dtype=np.int64)
    j = np.array([where[g[1]] for g in games], dtype=np.int64)
    s = np.array([float(g[2]) for g in games], dtype=float)
    return players, i, j, s


def _objective(theta: np.ndarray, i: np.ndarray, j: np.ndarray, s: np.ndarray, prior: float) -> float:
    d = theta[i] - theta[j]
    # log sigmoid(x) = -logaddexp(0, -x), stable for large |x|
    ll = -(s * np.logaddexp(0.0, -d) + (1.0 - s) * np.logaddexp(0.0, d)).sum()
    return float(ll - prior / 2 * np.dot(theta, theta))


def _fit(n: int, i: np.ndarray, j: np.ndarray, s: np.ndarray, prior: float) -> np.ndarray:
    """Newton's method with backtracking on the concave penalised log-likelihood."""
    theta = np.zeros(n)
    value = _objective(theta, i, j, s, prior)
    for _ in range(200):
        p = 1.0 / (1.0 + np.exp(-(theta[i] - theta[j])))
        r = s - p
        grad = np.bincount(i, r, n) - np.bincount(j, r, n) - prior * theta
        w = p * (1.0 - p)
        hess = np.zeros((n, n))
        np.add.at(hess, (i, i), -w)
        np.add.at(hess, (j, j), -w)
        np.add.at(hess, (i, j), w)
        np.add.at(hess, (j, i), w)
        hess -= prior * np.eye(n)
        # lstsq: with prior == 0 the Hessian is singular along the common shift of all strengths
        step = np.linalg.lstsq(-hess, grad, rcond=None)[0]
        t = 1.0
        while t > 1e-8:
            new = theta + t * step
            new_value = _objective(new, i, j, s, prior)
            if new_value >= value - 1e-12:
                break
            t /= 2
        theta, value = new, new_value
        if np.max(np.abs(t * step)) < 1e-10:
            break
    return theta - theta.mean()


def fit_bradley_terry(games: Sequence[Game], prior: float = 0.01) -> dict[str, float]:
    """Maximum-likelihood Bradley-Terry log-strengths, mean-centred.

    Maximises sum score * log sigmoid(ti - tj) + (1 - score) * log sigmoid(tj - ti)
    - prior / 2 * sum theta^2. The tiny ridge keeps undefeated (or winless) players finite and
    barely moves the others. Only players that appear in `games` are rated.
    """
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    if not games:
        return {}
    players, i, j, s = _encode(games)
    theta = _fit(len(players), i, j, s, prior)
    return {p: float(t) for p, t in zip(players, theta)}


def rate_players(
    games: Sequence[Game], n_boot: int = 200, seed: int = 0, prior: float = 0.01
) -> list[Rating]:
    """Ratings sorted by strength, with 2.5/97.5 percentile intervals from resampling games.

    Each bootstrap replicate resamples the games with replacement and refits; a player absent
    from a replicate is left out of that replicate's percentiles. Deterministic given `seed`.
    """
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not games:
        return []
    players, i, j, s = _encode(games)
    n = len(players)
    theta = _fit(n, i, j, s, prior)
    rng = np.random.default_rng(seed)
    boots = np.full((n_boot, n), np.nan)
    for b in range(n_boot):
        pick = rng.integers(0, len(s), len(s))
        bi, bj, bs = i[pick], j[pick], s[pick]
        present = np.unique(np.concatenate([bi, bj]))
        remap = np.full(n, -1, dtype=np.int64)
        remap[present] = np.arange(len(present))
        boots[b, present] = _fit(len(present), remap[bi], remap[bj], bs, prior)
    count = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    total = np.bincount(i, s, n) + np.bincount(j, 1.0 - s, n)
    out = []
    for k, player in enumerate(players):
        col = boots[:, k][~np.isnan(boots[:, k])]
        low, high = (
            (float(np.percentile(col, 2.5)), float(np.percentile(col, 97.5))) if col.size else (math.nan, math.nan)
        )
        t = float(theta[k])
        out.append(
            Rating(
                player=player,
                theta=t,
                low=low,
                high=high,
                elo=ELO_BASE + ELO_SCALE * t,
                elo_low=ELO_BASE + ELO_SCALE * low,
                elo_high=ELO_BASE + ELO_SCALE * high,
                games=int(count[k]),
                score=float(total[k] / count[k]),
            )
        )
    out.sort(key=lambda r: (-r.theta, r.player))
    return out
