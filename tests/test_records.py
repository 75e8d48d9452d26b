"""Records: JSON round trip of nested dataclasses, schema-version refusal, deterministic ids."""

import json

import pytest

from debate.records import (
    SCHEMA_VERSION,
    Question,
    Quote,
    Seat,
    SchemaError,
    Speech,
    Transcript,
    Verdict,
    from_json,
    order_average,
    stable_id,
    to_json,
)


def _transcript() -> Transcript:
    quotes = (
        Quote("the red lantern", verified=True),
        Quote("a blue lantern", verified=False, tagged=True),
        Quote("the lantern is red", verified=True, tagged=False, repaired="the lantern was red", edit_distance=2),
    )
    speeches = (
        Speech("t1", 0, 0, "debater_a", 0, "e1", "It is <quote>the red lantern</quote>.", quotes=quotes[:2],
               judge_text="It is <v_quote>the red lantern</v_quote>.", n_tokens=12),
        Speech("t1", 1, 0, "debater_b", 1, "e2", "", empty=True, truncated=True, quotes=quotes[2:]),
    )
    return Transcript(
        id="t1", run="r", match="m", question_id="q1", protocol="debate",
        seats=(Seat("debater_a", "e1", 0), Seat("debater_b", "e2", 1)),
        sample=2, status="complete", warnings=("passage truncated from 10 to 5 tokens",), speeches=speeches,
    )


def test_transcript_round_trip_rebuilds_nested_records() -> None:
    t = _transcript()
    back = from_json(Transcript, to_json(t))
    assert back == t
    assert isinstance(back.seats, tuple) and all(isinstance(s, Seat) for s in back.seats)
    assert isinstance(back.speeches, tuple) and all(isinstance(s, Speech) for s in back.speeches)
    assert isinstance(back.speeches[0].quotes, tuple)
    assert all(isinstance(q, Quote) for s in back.speeches for q in s.quotes)
    assert back.speeches[1].quotes[0].repaired == "the lantern was red"
    assert isinstance(back.warnings, tuple)
    assert back.seat("debater_b").entry == "e2"


def test_question_and_verdict_round_trip_give_tuples_back() -> None:
    q = Question("q1", "Where?", ("cellar", "attic"), 1, passage="p")
    assert from_json(Question, to_json(q)) == q
    assert isinstance(from_json(Question, to_json(q)).answers, tuple)
    v = Verdict("v", "r", "t", "q", "j", 0.7, p_orders=(0.8, 0.6), winner=0, raw="{}", beliefs=(0.55,))
    back = from_json(Verdict, to_json(v))
    assert back == v and isinstance(back.p_orders, tuple) and isinstance(back.beliefs, tuple)


def test_json_is_plain_and_carries_schema_version() -> None:
    data = json.loads(to_json(_transcript()))
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["speeches"][0]["quotes"][0]["text"] == "the red lantern"


def test_newer_schema_is_refused() -> None:
    data = json.loads(to_json(_transcript()))
    data["schema_version"] = 99
    with pytest.raises(SchemaError, match="newer") as err:
        from_json(Transcript, json.dumps(data))
    assert "99" in str(err.value)


def test_newer_schema_in_a_nested_record_is_refused() -> None:
    data = json.loads(to_json(_transcript()))
    data["speeches"][0]["schema_version"] = 99
    with pytest.raises(SchemaError, match="newer"):
        from_json(Transcript, json.dumps(data))


def test_schema_error_is_a_value_error() -> None:
    assert issubclass(SchemaError, ValueError)


def test_stable_id_deterministic_and_distinct() -> None:
    a = stable_id("run", "match", "q1", 0)
    assert a == stable_id("run", "match", "q1", 0)
    assert len(a) == 16 and all(c in "0123456789abcdef" for c in a)
    assert a != stable_id("run", "match", "q1", 1)
    assert a != stable_id("run", "match", "q2", 0)
    # the separator keeps part boundaries: ("ab", "c") is not ("a", "bc")
    assert stable_id("ab", "c") != stable_id("a", "bc")


def test_verdict_p_correct_and_order_average() -> None:
    v = Verdict("v", "r", "t", "q", "j", p_answer0=order_average((0.9, 0.5)), p_orders=(0.9, 0.5), winner=0)
    assert v.p_answer0 == pytest.approx(0.7)
    assert v.p_correct(0) == pytest.approx(0.7) and v.p_correct(1) == pytest.approx(0.3)
    assert Verdict("f", "r", "t", "q", "j", p_answer0=None).p_correct(1) is None
    with pytest.raises(ValueError, match="correct must be the answer index"):
        v.p_correct(2)
    with pytest.raises(ValueError, match="at least one"):
        order_average(())
