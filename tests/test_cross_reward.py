"""The all-opponents reward (`opponents: all`): the pairings planned from a question's rollouts, each speech's
reward as the mean over its opponents against hand-computed values, the config's limits, and a training run on
the tiny random model whose cross games are stored, judged and never repeated."""

from __future__ import annotations

import pytest

from debate.configs import ConfigError
from debate.records import Seat, Speech, Transcript
from debate.training.rewards import mean_rewards
from debate.training.samples import Sample
from arenas.selfplay_cross import CROSS, plan_crosses
from tests.test_selfplay import handles, tiny_cfg


def rollout(q: str, k: int, status: str = "complete") -> Transcript:
    """Rollout k of question q: debater_a takes side k % 2, as plan_rollouts seats them."""
    t_id = f"{q}-g{k}"
    seats = (Seat("debater_a", "current", k % 2), Seat("debater_b", "current", 1 - k % 2))
    speeches = tuple(Speech(t_id, i, 0, seat.role, seat.side, "current", f"{q} game {k} side {seat.side}")
                     for i, seat in enumerate(seats))
    return Transcript(t_id, "r", "rollout-1", q, "simultaneous", seats, sample=k, status=status, speeches=speeches,
                      tags=("rollout", "iteration-1"))


def test_plan_crosses_pairs_every_side_0_speech_with_every_side_1_speech_in_both_seatings():
    games = [rollout("q1", k) for k in range(3)] + [rollout("q2", 0), rollout("q2", 1), rollout("q2", 2, "failed")]
    crosses, games_of = plan_crosses("r", 1, games)
    assert len(crosses) == (2 * 9 - 3) + (2 * 4 - 2)  # q1: 3 rollouts; q2: the failed one is left out
    seen = {(t.question_id, tuple(s.text for s in t.speeches)) for t in crosses}
    assert ("q1", ("q1 game 0 side 0", "q1 game 1 side 1")) in seen
    assert ("q1", ("q1 game 1 side 1", "q1 game 0 side 0")) in seen
    assert ("q1", ("q1 game 0 side 0", "q1 game 0 side 1")) not in seen  # rollout 0 itself (side 0 spoke first)
    assert ("q1", ("q1 game 0 side 1", "q1 game 0 side 0")) in seen  # its other seating
    assert len(seen) == len(crosses)
    for t in crosses:
        assert t.status == "complete" and CROSS in t.tags and "iteration-1" in t.tags
        assert [s.index for s in t.speeches] == [0, 1] and all(s.transcript_id == t.id for s in t.speeches)
        for s in t.speeches:  # each speech sits in the seat that argues its side
            assert t.seat(s.role).side == s.side and s.text.endswith(f"side {s.side}")
    # every speech: judged against each of the question's opposing speeches in both seatings, first in half
    every = {t.id: t for t in games + crosses}
    for key, ids in games_of.items():
        assert ids[0] == key.split(":")[0] and len(ids) == len(set(ids))
        n = 3 if key.startswith("q1") else 2
        text = every[ids[0]].speeches[int(key.split(":")[1])].text
        assert len(ids) == 2 * n and sum(every[i].speeches[0].text == text for i in ids) == n
    assert "q2-g2:0" not in games_of
    again, _ = plan_crosses("r", 1, games)
    assert [t.id for t in again] == [t.id for t in crosses]  # stable ids: a resumed run finds them
    assert not {t.id for t in plan_crosses("r", 2, games)[0]} & {t.id for t in crosses}  # per iteration


def test_mean_rewards_average_a_speech_over_its_opponents():
    def s(key: str, side: int) -> Sample:
        return Sample(key, key.split(":")[0], "q1", side, "debater_a", 0, "p", "speech")

    samples = [s("g0:0", 0), s("g0:1", 1), s("g1:0", 0), s("x:0", 1)]
    games_of = {"g0:0": ["g0", "c01"], "g0:1": ["g0", "c10"], "g1:0": ["g1", "c10", "cfail"]}
    p0 = {"g0": 0.9, "c01": 0.6, "c10": 0.2, "g1": 0.5, "cfail": None}
    out = {x.key: x.reward for x in mean_rewards(samples, games_of, p0)}
    # g0:0 (side 0): (0.8 + 0.2) / 2; g0:1 (side 1): (-0.8 + 0.6) / 2; g1:0: (0 - 0.6) / 2, the failed verdict
    # left out; x:0 is in no game: dropped
    assert out == pytest.approx({"g0:0": 0.5, "g0:1": -0.1, "g1:0": -0.3})
    assert mean_rewards(samples, games_of, {}) == []  # no usable verdict: nothing, never a draw


def test_opponents_all_needs_one_round_simultaneous_and_the_judges_reward(tmp_path):
    assert tiny_cfg(tmp_path, opponents="all").opponents == "all"
    for bad in (dict(protocol="debate"), dict(rounds=2), dict(reward="verifiable"), dict(reward="turn")):
        with pytest.raises(ConfigError, match="opponents: all pairs speeches that never saw each other"):
            tiny_cfg(tmp_path, opponents="all", **bad)
    with pytest.raises(ConfigError, match="opponents"):
        tiny_cfg(tmp_path, opponents="everyone")


def test_training_with_every_opponent_judges_each_pairing_once(tmp_path, tiny_model_dir, monkeypatch):
    from arenas.selfplay import run_training
    from arenas.selfplay_offline import offline_update

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg(tmp_path / "results", opponents="all", samples=3, iterations=1)
    learner, judges = handles(cfg, tiny_model_dir)
    result = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges)
    row = result.rows[1]
    crosses = [t for t in result.store.transcripts("r") if CROSS in t.tags]
    complete = [t for t in result.store.transcripts("r") if "rollout" in t.tags and t.status == "complete"]
    assert row["cross_games"] == len(crosses) > 0 and len(crosses) <= 3 * (2 * 3 * 3 - 3)  # 2 x samples^2 - samples
    judged = {v.transcript_id for v in result.store.verdicts("r", judge="reward-model")}
    assert {t.id for t in crosses} <= judged
    assert row["samples"] + row["dropped"] == 2 * len(complete) and row["units"] > 0
    n_verdicts = len(result.store.verdicts("r"))
    learner2, judges2 = handles(cfg, tiny_model_dir)
    run_training(cfg, run="r", resume=True, progress=False, learner=learner2, judge_policies=judges2)
    assert len(result.store.verdicts("r")) == n_verdicts  # complete: nothing judged again
    with pytest.raises(ConfigError, match="opponents: all with --from-run"):
        offline_update(cfg, "r", run="off", learner=learner, progress=False)
