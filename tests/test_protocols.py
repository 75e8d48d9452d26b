"""Protocols: steps, resumption points and what each speaker may read."""

import pytest

from debate.protocols import PROTOCOLS, get_protocol, n_speeches, next_step, steps, visible_count


def test_sequential_debate_steps() -> None:
    p = get_protocol("debate", rounds=2)
    assert steps(p) == [[("debater_a", 0)], [("debater_b", 0)], [("debater_a", 1)], [("debater_b", 1)]]
    assert n_speeches(p) == 4
    assert [next_step(p, d) for d in range(5)] == [
        (0, [("debater_a", 0)]), (1, [("debater_b", 0)]), (2, [("debater_a", 1)]), (3, [("debater_b", 1)]), None
    ]
    # each speaker reads every earlier speech: b's first speech sees a's
    assert [visible_count(p, k) for k in range(4)] == [0, 1, 2, 3]


def test_simultaneous_steps_and_half_done_step() -> None:
    p = get_protocol("simultaneous", rounds=2)
    assert steps(p) == [[("debater_a", 0), ("debater_b", 0)], [("debater_a", 1), ("debater_b", 1)]]
    assert next_step(p, 0) == (0, [("debater_a", 0), ("debater_b", 0)])
    assert next_step(p, 1) == (0, [("debater_b", 0)])  # half done: only the missing speaker
    assert next_step(p, 2) == (1, [("debater_a", 1), ("debater_b", 1)])
    assert next_step(p, 3) == (1, [("debater_b", 1)])
    assert next_step(p, 4) is None
    # within a round nobody sees the other's speech of that round
    assert [visible_count(p, k) for k in range(2)] == [0, 2]


def test_consultancy_steps() -> None:
    p = get_protocol("consultancy", rounds=3, word_limit=40)
    assert p.roles == ("consultant",) and p.word_limit == 40
    assert steps(p) == [[("consultant", 0)], [("consultant", 1)], [("consultant", 2)]]
    assert next_step(p, 2) == (2, [("consultant", 2)])
    assert next_step(p, 3) is None
    assert visible_count(p, 2) == 2


@pytest.mark.parametrize("name", ["blind", "expert"])
def test_judge_only_protocols_have_no_speeches(name) -> None:
    p = get_protocol(name, rounds=3)
    assert p.rounds == 0 and p.roles == ()
    assert steps(p) == [] and n_speeches(p) == 0
    assert next_step(p, 0) is None


def test_only_expert_judge_sees_passage() -> None:
    assert [n for n, p in PROTOCOLS.items() if p.judge_sees_passage] == ["expert"]


def test_get_protocol_keeps_settings() -> None:
    p = get_protocol("debate", rounds=3, word_limit=25, beliefs=True)
    assert (p.rounds, p.word_limit, p.beliefs, p.simultaneous) == (3, 25, True, False)


def test_unknown_protocol_lists_known() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'duel'") as err:
        get_protocol("duel")
    for name in PROTOCOLS:
        assert name in str(err.value)
