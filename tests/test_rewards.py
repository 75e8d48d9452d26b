"""Rewards, baselines, pairs and labels against hand-computed values."""

from __future__ import annotations

import math

import pytest

from debate.training.rewards import (assign_rewards, best_worst_pairs, kto_examples, penalize_missing_eos, side_rewards,
                                     usable, verifiable_rewards, with_baselines)
from debate.training.samples import Sample


def S(key: str, tid: str = "t1", q: str = "q1", side: int = 0, turn: int = 0, reward: float = 0.0,
      baseline: float = 0.0) -> Sample:
    role = "debater_a" if side == 0 else "debater_b"
    return Sample(key, tid, q, side, role, turn, "prompt", "speech", reward, baseline)


def test_side_rewards_zero_sum():
    assert side_rewards(0.75) == pytest.approx((0.5, -0.5))
    assert side_rewards(0.5) == (0.0, 0.0)
    assert side_rewards(1.0) == (1.0, -1.0)
    assert side_rewards(0.0) == (-1.0, 1.0)
    for p in (0.0, 0.1, 0.33, 0.9):
        assert sum(side_rewards(p)) == pytest.approx(0.0)
    assert side_rewards(1.0 + 1e-9) == (1.0, -1.0)  # rounding error is clamped
    with pytest.raises(ValueError, match="probability"):
        side_rewards(1.5)


def test_assign_rewards_by_transcript_and_drops_missing_verdicts():
    samples = [S("a0", "t1", side=0), S("b0", "t1", side=1), S("a1", "t2", side=0), S("b1", "t3", side=1)]
    samples.append(S("c2", "t4", side=0))
    out = assign_rewards(samples, {"t1": 0.9, "t2": None, "t4": float("nan")})  # t2, t4 unusable, t3 missing
    assert [s.key for s in out] == ["a0", "b0"]
    assert out[0].reward == pytest.approx(0.8)
    assert out[1].reward == pytest.approx(-0.8)
    assert samples[0].reward == 0.0  # inputs are not mutated


def test_verifiable_rewards():
    samples = [S("a", "t1", side=0), S("b", "t1", side=1), S("c", "t2", side=0), S("d", "t2", side=1),
               S("e", "t3", side=0)]
    out = verifiable_rewards(samples, {"t1": True, "t2": False}, {"t1": 1, "t2": 1, "t3": 0})
    # t1: honest side 1 is supported -> +1 honest, -1 dishonest; t2: not supported -> flipped; t3 dropped
    assert [(s.key, s.reward) for s in out] == [("a", -1.0), ("b", 1.0), ("c", 1.0), ("d", -1.0)]


def test_missing_eos_penalty_lowers_only_cut_speeches_and_can_flip_a_pair():
    import dataclasses

    cut = dataclasses.replace(S("a", reward=0.6), ended=False)  # the better speech, cut off at the limit
    samples = [cut, S("b", reward=0.2), S("c", reward=-0.4)]
    assert [p[0].key for p in best_worst_pairs(samples)] == ["a"]
    out = penalize_missing_eos(samples, 0.5)
    assert [(x.key, x.reward) for x in out] == [("a", pytest.approx(0.1)), ("b", 0.2), ("c", -0.4)]
    assert samples[0].reward == 0.6  # inputs are not mutated
    assert best_worst_pairs(out)[0][0].key == "b"  # a penalty larger than the margin hands the pair to the one that ended
    based = {x.key: x for x in with_baselines(out)}  # baselines after the penalty see it
    assert based["b"].baseline == pytest.approx((0.1 - 0.4) / 2)
    assert penalize_missing_eos(samples, 0.0) == samples
    with pytest.raises(ValueError, match="missing_eos_penalty"):
        penalize_missing_eos(samples, -0.1)


def test_leave_one_out_baselines():
    samples = [S("x1", reward=0.6), S("x2", reward=0.2), S("x3", reward=-0.2),  # group (q1, 0, 0)
               S("y1", side=1, reward=-0.6), S("y2", side=1, reward=-0.2),      # group (q1, 1, 0)
               S("z1", q="q2", reward=0.4)]                                      # a group of one
    out = {s.key: s for s in with_baselines(samples)}
    assert out["x1"].baseline == pytest.approx((0.2 - 0.2) / 2)
    assert out["x2"].baseline == pytest.approx((0.6 - 0.2) / 2)
    assert out["x3"].baseline == pytest.approx((0.6 + 0.2) / 2)
    assert out["x1"].advantage == pytest.approx(0.6)
    assert out["x3"].advantage == pytest.approx(-0.6)
    assert out["y1"].baseline == pytest.approx(-0.2)
    assert out["y2"].baseline == pytest.approx(-0.6)
    # a group of one gets its own reward: advantage 0, no signal
    assert out["z1"].baseline == pytest.approx(0.4) and out["z1"].advantage == 0.0
    assert [s.key for s in with_baselines(samples)] == [s.key for s in samples]  # order kept


def test_pooled_baseline_over_both_sides_is_zero():
    """Why baselines are per role: the judge's rewards are zero-sum, so the mean over both sides of
    the same debates is identically 0 and a pooled baseline would subtract nothing."""
    samples = []
    for i, p in enumerate([0.9, 0.3, 0.55]):
        samples += assign_rewards([S(f"a{i}", f"t{i}", side=0), S(f"b{i}", f"t{i}", side=1)], {f"t{i}": p})
    pooled = sum(s.reward for s in samples) / len(samples)
    assert pooled == pytest.approx(0.0)
    per_role = {s.key: s.baseline for s in with_baselines(samples)}
    assert per_role["a0"] == pytest.approx((-0.4 + 0.1) / 2)  # side-0 rewards 0.8, -0.4, 0.1
    assert per_role["b0"] == pytest.approx((0.4 - 0.1) / 2)


def test_best_worst_pairs():
    samples = [S("x2", reward=0.1), S("x1", reward=0.5), S("x3", reward=-0.3),     # group (q1, 0, 0)
               S("t1", turn=1, reward=0.2), S("t2", turn=1, reward=0.2 + 1e-9),   # a tie
               S("solo", q="q0", reward=0.9),                                     # group of one
               S("b1", side=1, reward=0.4), S("b2", side=1, reward=0.4), S("b0", side=1, reward=-0.4)]
    pairs = best_worst_pairs(samples)
    assert [(w.key, l.key) for w, l in pairs] == [("x1", "x3"), ("b1", "b0")]  # groups in sorted order
    assert best_worst_pairs(list(reversed(samples))) == pairs  # input order does not matter


def test_kto_examples_and_usable():
    samples = [S("g", reward=0.5, baseline=0.1), S("b", reward=-0.5, baseline=0.1), S("z", reward=0.3, baseline=0.3)]
    assert [(s.key, d) for s, d in kto_examples(samples)] == [("g", True), ("b", False)]
    assert usable("labelled", samples) == 2
    assert usable("tokens", samples) == 2
    assert usable("pairs", samples) == 1
    solo = with_baselines([S("a", reward=0.7), S("b", q="q2", reward=-0.7)])
    assert usable("pairs", solo) == usable("labelled", solo) == usable("tokens", solo) == 0
    with pytest.raises(ValueError, match="pairs, labelled, tokens"):
        usable("nope", samples)


def test_evidence_agreement_compares_supporting_and_other_speeches_within_a_group_only():
    from debate.training.quote_stats import evidence_agreement

    samples = [  # group q1 side 0: two supporting, two not; group q2: one of each, the reward backwards
        S("a", "t1", reward=0.8), S("b", "t2", reward=0.2), S("c", "t3", reward=0.2), S("d", "t4", reward=-0.4),
        S("e", "t5", q="q2", reward=-0.6), S("f", "t6", q="q2", reward=0.6),
        S("g", "t7", q="q3", reward=0.9),  # alone in its group: nothing to compare
        S("h", "t1", side=1, reward=-0.8),  # a dishonest speech: not in the map, never compared
    ]
    supporting = {"a": True, "b": True, "c": False, "d": False, "e": True, "f": False, "g": True}
    out = evidence_agreement(samples, supporting)
    # q1: a>c, a>d, b=c (tie), b>d agree 3, tie 1; q2: e<f disagrees; across groups nothing is compared
    assert out["evidence_comparisons"] == 5 and out["evidence_disagreeing"] == 1
    assert out["evidence_agreement"] == pytest.approx(3 / 5)
    flipped = evidence_agreement(samples, {k: not v for k, v in supporting.items()})
    assert flipped["evidence_agreement"] == pytest.approx(1 / 5) and flipped["evidence_disagreeing"] == 3
    none = evidence_agreement(samples, {k: True for k in supporting})
    assert none["evidence_comparisons"] == 0 and math.isnan(none["evidence_agreement"])


def test_of_sides_keeps_the_side_an_update_trains_on():
    from debate.training.rewards import of_sides

    correct = {"q1": 0, "q2": 1}
    samples = [S("a", q="q1", side=0, reward=0.5), S("b", q="q1", side=1), S("c", q="q2", side=0),
               S("d", q="q2", side=1)]
    assert [s.key for s in of_sides(samples, correct)] == ["a", "b", "c", "d"]
    assert [s.key for s in of_sides(samples, correct, "honest")] == ["a", "d"]
    assert [s.key for s in of_sides(samples, correct, "dishonest")] == ["b", "c"]
    assert of_sides(samples, correct, "honest")[0].reward == 0.5  # rewards untouched
    with pytest.raises(ValueError, match="train_sides"):
        of_sides(samples, correct, "left")


def test_pair_quoting_counts_what_each_sides_pairs_teach_about_quoting():
    from debate.training.quote_stats import pair_quoting

    correct = {"q1": 0}
    honest = [S("h1", q="q1", side=0, reward=0.9), S("h2", q="q1", side=0, reward=-0.2)]
    dishonest = [S("d1", q="q1", side=1, reward=0.4), S("d2", q="q1", side=1, reward=-0.6)]
    tagged = {"h1": True, "h2": True, "d1": False, "d2": True}  # the winning lie quotes nothing
    pairs = best_worst_pairs(honest + dishonest)
    out = pair_quoting(pairs, tagged, correct)
    assert out == {"pairs_honest": 1, "pairs_honest_best_tagged": 1, "pairs_honest_worst_tagged": 1,
                   "pairs_dishonest": 1, "pairs_dishonest_best_tagged": 0, "pairs_dishonest_worst_tagged": 1}
    assert pair_quoting(pairs, {"h1": True}, correct)["pairs_honest"] == 0  # a speech it cannot see: left out
