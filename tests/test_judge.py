"""The model judge with scripted mock-backend policies (and the real tiny model); verdict text parsing."""

from __future__ import annotations

import json
import math
import re
from typing import Callable, Optional

import pytest

from debate.actors import LocalPolicy
from debate.backends.base import ScoreRequest, messages
from debate.backends.mock import mock_policy
from debate.prompts import load_prompts
from debate.protocols import get_protocol
from debate.records import Question, Seat, Speech, Transcript
from judges.base import Case, verdict_id
from judges.model_judge import CANDIDATES, ModelJudge
from judges.parsing import parse_verdict

PASSAGE = "The red lantern hung in the cellar all winter. SECRET-PASSAGE-SENTENCE stays hidden."
ANSWERS = ("the cellar", "the attic")
PROMPTS = load_prompts("default")


def shown_order(req_messages, question: Question) -> int:
    """0 when the prompt shows answer 0 as A, 1 when it shows it as B."""
    u = dict(req_messages)["user"]
    a = re.search(r"^A: (.*)$", u, re.M).group(1)
    assert a in question.answers
    return 0 if a == question.answers[0] else 1


def n_shown_speeches(req_messages) -> int:
    u = dict(req_messages)["user"]
    return len(re.findall(r"^(?:Debater|Consultant) ", u, re.M))


def ScriptedJudgePolicy(probs: Optional[Callable] = None, text: Optional[Callable] = None,
                        context_length: int = 100_000, fail: bool = False) -> LocalPolicy:
    """A mock-backend judge policy: `probs(messages) -> (mass of A, mass of B)` or text from
    `text(messages)`; its calls are recorded on `.backend`. fail: every scoring call raises."""
    reply = (lambda r, call, row: text(r.messages)) if text else None
    return mock_policy("scripted-judge", letters=probs, reply=reply, context_length=context_length,
                       fail="score" if fail else None)


def question(i: int = 0) -> Question:
    return Question(f"q{i}", f"Where is lantern {i}?", ANSWERS, 0, passage=PASSAGE)


def speech(tid: str, index: int, turn: int, role: str, side: int, text: str, **kw) -> Speech:
    return Speech(tid, index, turn, role, side, "e", text, judge_text=kw.pop("judge_text", text), **kw)


def debate_case(i: int = 0, protocol: str = "debate", rounds: int = 1, beliefs: bool = False, extra: str = "") -> Case:
    p = get_protocol(protocol, rounds=rounds, beliefs=beliefs)
    tid = f"t{i}"
    speeches = []
    for r in range(p.rounds):
        for role in p.roles:
            side = 0 if role in ("debater_a", "consultant") else 1
            speeches.append(speech(tid, len(speeches), r, role, side, f"{role} round {r} says {ANSWERS[side]}{extra}"))
    seats = tuple(Seat(role, "e", 0 if role != "debater_b" else 1) for role in p.roles)
    t = Transcript(tid, "r", "m", f"q{i}", p.name, seats, status="complete", speeches=tuple(speeches))
    return Case(t, question(i), p)


def favour0(q: Question, p0: float = 2 / 3) -> Callable:
    """Letter masses of a judge that believes answer 0 with probability p0 in either order."""
    return lambda m: (p0, 1 - p0) if shown_order(m, q) == 0 else (1 - p0, p0)


# presentation orders and averaging


def test_position_biased_judge_is_indifferent() -> None:
    """Always preferring the letter A, whatever it shows, averages to 0.5: a recorded failure, not a tie."""
    case = debate_case()
    (v,) = ModelJudge("j", ScriptedJudgePolicy(probs=lambda m: (0.6, 0.3)), PROMPTS).judge([case])
    assert v.p_orders == pytest.approx((2 / 3, 1 / 3))
    assert v.winner is None and v.p_answer0 is None and "indifferent" in v.error


def test_p_answer0_averages_both_orders() -> None:
    case = debate_case()
    # unnormalised letter masses: order 0 -> p(A) = 0.8; order 1 -> p(A) = 0.4 (so p(answer 0 = B) = 0.6)
    pol = ScriptedJudgePolicy(probs=lambda m: (0.4, 0.1) if shown_order(m, case.question) == 0 else (0.2, 0.3))
    (v,) = ModelJudge("j", pol, PROMPTS).judge([case])
    assert v.p_orders == pytest.approx((0.8, 0.6))
    assert v.p_answer0 == pytest.approx(0.7)
    assert v.winner == 0 and v.error is None
    assert v.id == verdict_id("r", "t0", "j") and v.transcript_id == "t0" and v.question_id == "q0"
    raw = json.loads(v.raw)
    assert set(raw) == {"order0", "order1"}
    assert raw["order0"]["logprobs"]["A"] == pytest.approx(math.log(0.4))
    # one batched call with both orders of the one transcript
    assert len(pol.backend.score_calls) == 1 and len(pol.backend.score_calls[0]) == 2
    req = pol.backend.score_calls[0][0]
    assert req.candidates == CANDIDATES == (" A", " B") and req.prefix == PROMPTS["judge"]["prefix"]
    assert sorted(shown_order(r.messages, case.question) for r in pol.backend.score_calls[0]) == [0, 1]


def test_order_one_shows_answers_and_sides_swapped() -> None:
    case = debate_case()
    pol = ScriptedJudgePolicy(probs=favour0(case.question))
    ModelJudge("j", pol, PROMPTS).judge([case])
    by_order = {shown_order(r.messages, case.question): dict(r.messages)["user"] for r in pol.backend.score_calls[0]}
    assert "A: the cellar\nB: the attic" in by_order[0] and "A: the attic\nB: the cellar" in by_order[1]
    assert "Debater for A: debater_a round 0" in by_order[0]
    assert "Debater for B: debater_a round 0" in by_order[1]


def test_winner_one_and_many_cases_unscrambled() -> None:
    """Prompts are sorted by length inside the judge; each verdict must get its own transcript's numbers."""
    cases = [debate_case(i, extra=" padding" * (5 - i)) for i in range(5)]
    table = {f"Where is lantern {i}?": 0.1 + 0.2 * i for i in range(5)}  # p(answer 0) per question

    def probs(m):
        u = dict(m)["user"]
        q = re.search(r"Question: (.*)", u).group(1)
        p0 = table[q]
        order = shown_order(m, cases[0].question)
        return (p0, 1 - p0) if order == 0 else (1 - p0, p0)

    pol = ScriptedJudgePolicy(probs=probs)
    verdicts = ModelJudge("j", pol, PROMPTS, chunk=2).judge(cases)
    assert [v.transcript_id for v in verdicts] == [c.transcript.id for c in cases]
    for i, v in enumerate(verdicts):
        if i == 2:
            continue
        assert v.p_answer0 == pytest.approx(0.1 + 0.2 * i)
        assert v.p_orders == pytest.approx((0.1 + 0.2 * i,) * 2)
    assert [v.winner for v in verdicts] == [1, 1, None, 0, 0]  # 0.5 exactly is a recorded failure
    assert verdicts[2].p_answer0 is None and "indifferent" in verdicts[2].error
    assert [len(c) for c in pol.backend.score_calls] == [4, 4, 2]  # chunks of two cases, two orders each


def test_low_letter_mass_is_a_failure_with_raw_kept() -> None:
    case = debate_case()
    pol = ScriptedJudgePolicy(probs=lambda m: (1e-9, 2e-9) if shown_order(m, case.question) == 1 else (0.6, 0.3))
    (v,) = ModelJudge("j", pol, PROMPTS, min_letter_mass=1e-4).judge([case])
    assert v.winner is None and v.p_answer0 is None
    assert v.error and "no usable answer" in v.error
    raw = json.loads(v.raw)
    assert raw["order1"]["logprobs"]["A"] == pytest.approx(math.log(1e-9))
    assert raw["order0"]["logprobs"]["A"] == pytest.approx(math.log(0.6))


def test_failed_judge_call_recorded_per_verdict() -> None:
    cases = [debate_case(0), debate_case(1)]
    (v0, v1) = ModelJudge("j", ScriptedJudgePolicy(fail=True), PROMPTS).judge(cases)
    for v, c in ((v0, cases[0]), (v1, cases[1])):
        assert v.winner is None and v.p_answer0 is None and v.transcript_id == c.transcript.id
        assert "judge call failed" in v.error and "scoring failed (mock backend" in v.error


def test_unknown_mode_refused() -> None:
    with pytest.raises(ValueError, match="logprob"):
        ModelJudge("j", ScriptedJudgePolicy(), PROMPTS, mode="vibes")


# text mode


def test_text_mode_parses_both_orders() -> None:
    case = debate_case()
    # order 0: "B (80%)" -> p(A) = 0.2 -> p(answer0) = 0.2; order 1: "Answer: B 0.9" -> answer 0 shown as B: 0.9
    pol = ScriptedJudgePolicy(text=lambda m: "B (80%)" if shown_order(m, case.question) == 0 else "Answer: B 0.9")
    (v,) = ModelJudge("j", pol, PROMPTS, mode="text").judge([case])
    assert v.p_orders == pytest.approx((0.2, 0.9))
    assert v.p_answer0 == pytest.approx(0.55) and v.winner == 0
    assert json.loads(v.raw) == {"order0": "B (80%)", "order1": "Answer: B 0.9"}
    reqs = pol.backend.calls[0]
    assert all(r.sampling.temperature == 0.0 for r in reqs)
    assert pol.backend.score_calls == []


def test_text_mode_unparseable_is_failure() -> None:
    case = debate_case()
    pol = ScriptedJudgePolicy(text=lambda m: "no idea" if shown_order(m, case.question) == 1 else "A")
    (v,) = ModelJudge("j", pol, PROMPTS, mode="text").judge([case])
    assert v.winner is None and v.p_answer0 is None and v.error
    assert json.loads(v.raw) == {"order0": "A", "order1": "no idea"}


# parsing


@pytest.mark.parametrize("text,expected", [
    ("Answer: B (80%)", (1, 0.8)),
    ("A", (0, 1.0)),
    ("B", (1, 1.0)),
    ("A 0.75", (0, 0.75)),
    ("I think 0.7 A", (0, 1.0)),  # the confidence counts only after the letter
    ("Answer: A, 95 %", (0, 0.95)),
    ("B: 1.0", (1, 1.0)),
    ("A (100%)", (0, 1.0)),
    ("Answer A or B? A", (0, 1.0)),  # the first standalone letter is the choice
    ("no idea", None),
    ("", None),
    ("Absolutely Bad", None),  # letters inside words are not answers
    ("A (150%)", None),
])
def test_parse_verdict(text, expected) -> None:
    got = parse_verdict(text)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got[0] == expected[0] and got[1] == pytest.approx(expected[1])


# what the judge sees


@pytest.mark.parametrize("protocol", ["debate", "simultaneous", "consultancy", "blind"])
def test_judge_never_sees_passage_without_expert(protocol) -> None:
    case = debate_case(protocol=protocol, rounds=2)
    pol = ScriptedJudgePolicy(probs=favour0(case.question))
    (v,) = ModelJudge("j", pol, PROMPTS).judge([case])
    assert v.winner == 0
    for r in pol.backend.score_calls[0]:
        text = " ".join(c for _, c in r.messages)
        assert "SECRET-PASSAGE-SENTENCE" not in text and "Story:\n" not in text
    n = n_shown_speeches(pol.backend.score_calls[0][0].messages)
    assert n == len(case.transcript.speeches)
    if protocol == "blind":
        assert "There are no speeches." in dict(pol.backend.score_calls[0][0].messages)["user"]


def test_expert_judge_sees_passage() -> None:
    case = debate_case(protocol="expert")
    pol = ScriptedJudgePolicy(probs=favour0(case.question))
    ModelJudge("j", pol, PROMPTS).judge([case])
    for r in pol.backend.score_calls[0]:
        assert PASSAGE in dict(r.messages)["user"]


def test_expert_passage_truncated_to_judge_context() -> None:
    from debate.context import JUDGE_EXPERT_PROMPT_TOKENS

    case = debate_case(protocol="expert")
    pol = ScriptedJudgePolicy(probs=favour0(case.question), context_length=JUDGE_EXPERT_PROMPT_TOKENS + 5)
    ModelJudge("j", pol, PROMPTS).judge([case])
    u = dict(pol.backend.score_calls[0][0].messages)["user"]
    assert "The red lantern hung in" in u and "SECRET-PASSAGE-SENTENCE" not in u


def test_judge_sees_marked_quotes_and_empty_speeches() -> None:
    case = debate_case()
    s0, s1 = case.transcript.speeches
    s0 = Speech(s0.transcript_id, 0, 0, "debater_a", 0, "e", "x <quote>hung in the cellar</quote>",
                judge_text="x <v_quote>hung in the cellar</v_quote>")
    s1 = Speech(s1.transcript_id, 1, 0, "debater_b", 1, "e", "<quote></quote>", judge_text="<u_quote></u_quote>", empty=True)
    from dataclasses import replace

    case = replace(case, transcript=replace(case.transcript, speeches=(s0, s1)))
    pol = ScriptedJudgePolicy(probs=favour0(case.question))
    ModelJudge("j", pol, PROMPTS).judge([case])
    u = {shown_order(r.messages, case.question): dict(r.messages)["user"] for r in pol.backend.score_calls[0]}[0]
    assert 'Debater for A: x (VERIFIED quote: "hung in the cellar")' in u
    assert "Debater for B: (no argument given)" in u
    assert "<quote>" not in u


# beliefs


def test_beliefs_one_per_turn_before_final() -> None:
    case = debate_case(rounds=3, beliefs=True)
    assert len(case.transcript.speeches) == 6

    def probs(m):  # belief in answer 0 grows with the speeches read: 2 -> 0.6, 4 -> 0.7, 6 -> 0.8
        p0 = 0.5 + 0.05 * n_shown_speeches(m)
        return (p0, 1 - p0) if shown_order(m, case.question) == 0 else (1 - p0, p0)

    pol = ScriptedJudgePolicy(probs=probs)
    (v,) = ModelJudge("j", pol, PROMPTS).judge([case])
    assert sorted({n_shown_speeches(r.messages) for r in pol.backend.score_calls[0]}) == [2, 4, 6]
    assert len(pol.backend.score_calls[0]) == 6  # three prefixes, two orders each
    assert v.beliefs == pytest.approx((0.6, 0.7))
    assert v.p_answer0 == pytest.approx(0.8)


def test_no_beliefs_unless_asked() -> None:
    case = debate_case(rounds=3)
    pol = ScriptedJudgePolicy(probs=favour0(case.question))
    (v,) = ModelJudge("j", pol, PROMPTS).judge([case])
    assert v.beliefs == () and len(pol.backend.score_calls[0]) == 2


def test_simultaneous_beliefs_after_each_round() -> None:
    case = debate_case(protocol="simultaneous", rounds=2, beliefs=True)
    pol = ScriptedJudgePolicy(probs=favour0(case.question))
    (v,) = ModelJudge("j", pol, PROMPTS).judge([case])
    assert sorted({n_shown_speeches(r.messages) for r in pol.backend.score_calls[0]}) == [2, 4]
    assert v.beliefs == pytest.approx((2 / 3,)) and v.p_answer0 == pytest.approx(2 / 3)


# the real tiny model


def test_tiny_model_judges(tiny_policy) -> None:
    cases = [debate_case(0), debate_case(1, protocol="consultancy")]
    verdicts = ModelJudge("tiny-judge", tiny_policy, PROMPTS).judge(cases)
    assert len(verdicts) == 2
    for v, c in zip(verdicts, cases):
        assert v.transcript_id == c.transcript.id and v.error is None
        assert 0.0 < v.p_answer0 < 1.0
        assert len(v.p_orders) == 2 and all(0.0 < p < 1.0 for p in v.p_orders)
        assert v.winner == (0 if v.p_answer0 > 0.5 else 1)
        raw = json.loads(v.raw)
        assert set(raw["order0"]["logprobs"]) == {"A", "B"}


def test_tiny_backend_scores_are_deterministic(tiny_backend) -> None:
    req = ScoreRequest(messages(("user", "Which, A or B?")), "Answer:", (" A", " B"))
    (a,) = tiny_backend.score([req])
    (b,) = tiny_backend.score([req, ScoreRequest(messages(("user", "a much longer prompt " * 5)), "Answer:", (" A", " B"))])[:1]
    assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)  # left padding does not change the answer
    assert all(x < 0 for x in a.logprobs) and len(a.top) == 5


def test_candidates_sharing_first_token_refused(tiny_backend) -> None:
    ids = [tiny_backend.tokenizer.encode(c, add_special_tokens=False) for c in ("Answer: A", "Answer: B")]
    assert ids[0][0] == ids[1][0]  # the premise: both begin with the same token
    req = ScoreRequest(messages(("user", "Which?")), "", ("Answer: A", "Answer: B"))
    with pytest.raises(ValueError, match="share their first token"):
        tiny_backend.score([req])


def test_tokens_counted_and_truncated_once_per_chunk() -> None:
    """A chunk of expert and debate cases: one count call for every passage and speech, one truncate call."""
    from debate.context import JUDGE_EXPERT_PROMPT_TOKENS

    cases = [debate_case(i, protocol="expert") for i in range(3)] + [debate_case(3 + i, rounds=2) for i in range(2)]
    pol = ScriptedJudgePolicy(probs=favour0(cases[0].question), context_length=JUDGE_EXPERT_PROMPT_TOKENS + 5)
    verdicts = ModelJudge("j", pol, PROMPTS).judge(cases)
    assert len(verdicts) == 5
    assert len(pol.backend.count_calls) == 1
    assert len(pol.backend.count_calls[0]) == len(cases) + sum(len(c.transcript.speeches) for c in cases)
    assert pol.backend.truncate_calls == [[PASSAGE] * 3]  # only the expert cases' passages, all at once
    for r in pol.backend.score_calls[0]:
        assert "SECRET-PASSAGE-SENTENCE" not in dict(r.messages)["user"]


def test_tiny_backend_truncates_a_batch_each_to_its_limit(tiny_backend) -> None:
    texts = ["one two three four five six seven", "alpha beta gamma delta"]
    counts = tiny_backend.count_tokens(texts)
    cut = tiny_backend.truncate_tokens(texts, [3, 100])
    assert tiny_backend.count_tokens(cut) == [3, counts[1]] and cut[1] == texts[1]
    assert texts[0].startswith(cut[0].strip())
