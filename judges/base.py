"""The judge interface: transcripts in, verdicts out. Judges are built by the caller and passed in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol as TypingProtocol, Sequence

from debate.protocols import Protocol
from debate.records import Question, Transcript, Verdict, order_average, stable_id


@dataclass(frozen=True)
class Case:
    """One transcript to judge, with its question and the rules it was played under."""

    transcript: Transcript
    question: Question
    protocol: Protocol


class Judge(TypingProtocol):
    name: str

    def judge(self, cases: Sequence[Case], progress: bool = False) -> list[Verdict]: ...


def verdict_id(run: str, transcript_id: str, judge: str) -> str:
    return stable_id("verdict", run, transcript_id, judge)


def _verdict(case: Case, judge: str, **fields) -> Verdict:
    t = case.transcript
    return Verdict(id=verdict_id(t.run, t.id, judge), run=t.run, transcript_id=t.id, question_id=t.question_id, judge=judge, **fields)


def failed_verdict(case: Case, judge: str, error: str, raw: str = "", p_orders: tuple[float, ...] = ()) -> Verdict:
    """A judge output with no usable answer: a recorded failure, never a tie or a coin flip."""
    return _verdict(case, judge, p_answer0=None, p_orders=p_orders, winner=None, raw=raw, error=error)


def decided_verdict(case: Case, judge: str, p_orders: tuple[float, ...], raw: str, beliefs: tuple[float, ...] = ()) -> Verdict:
    """A verdict from each presentation order's probability of answer 0, averaged."""
    p = order_average(p_orders)
    if p == 0.5:
        return failed_verdict(case, judge, "judge indifferent: probability exactly 0.5 for both answers", raw, p_orders)
    return _verdict(case, judge, p_answer0=p, p_orders=p_orders, winner=0 if p > 0.5 else 1, raw=raw, beliefs=beliefs)
