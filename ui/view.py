"""Pure logic behind the judging pages (no Streamlit): displayed answer order, probability mapping, the
reason's counter, speech rendering, turn grouping and inter-annotator agreement (calibration bins are
`arenas.metrics.calibration_bins`).
Unit-testable on its own. The order itself is drawn at random and stored with each slot (`Slot.order`)."""

from __future__ import annotations

import html
import itertools
import json
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from arenas.metrics import rate
from debate.prompts import LETTERS
from debate.records import Speech, Verdict
from judges.reasons import REASON_MAX_CHARS, normalise_reason, reason_problem

VERIFIED_STYLE = "background:#c8f2c8;color:#0b3d0b;border-radius:3px;padding:0 2px"
UNVERIFIED_STYLE = "color:#b00020;text-decoration:line-through"
NOT_FOUND_NOTE = "(not found in the story)"

_V = re.compile(r"&lt;v_quote&gt;(.*?)&lt;/v_quote&gt;", re.DOTALL)
_U = re.compile(r"&lt;u_quote&gt;(.*?)&lt;/u_quote&gt;", re.DOTALL)


# -- displayed order and probabilities ----------------------------------------------------------------
def displayed_answers(answers: Sequence[str], order: int) -> tuple[str, str]:
    """The two answers as shown, (A, B)."""
    return (answers[0], answers[1]) if order == 0 else (answers[1], answers[0])


def letter_of(answer: int, order: int) -> str:
    """The displayed letter of answer index `answer` under `order`."""
    return LETTERS[answer if order == 0 else 1 - answer]


def to_answer0(p_displayed_a: float, order: int) -> float:
    """The probability of answer 0 from the judge's probability for the displayed answer A."""
    return p_displayed_a if order == 0 else 1.0 - p_displayed_a


def to_displayed_a(p_answer0: float, order: int) -> float:
    """The inverse of `to_answer0`: the probability of the displayed A from that of answer 0."""
    return p_answer0 if order == 0 else 1.0 - p_answer0


def final_problem(percent_a: int, reason: str) -> Optional[str]:
    """Why a final verdict cannot be submitted yet, or None when it can."""
    if percent_a == 50:
        return "Lean one way: a final verdict of exactly 50% is not allowed."
    return reason_problem(reason)


def reason_counter(reason: str) -> tuple[str, bool]:
    """The counter shown under the reason field, and whether the reason is over the limit (counted as stored:
    invisible characters removed, runs of spaces collapsed)."""
    n = len(normalise_reason(reason))
    if n > REASON_MAX_CHARS:
        return (f"{n:,} of at most {REASON_MAX_CHARS:,} characters: {n - REASON_MAX_CHARS:,} over the limit. "
                "Shorten it before you submit; a reason over the limit is refused, never cut."), True
    return f"{n:,} of at most {REASON_MAX_CHARS:,} characters", False


# -- speeches -------------------------------------------------------------------------------------
def role_label(role: str, side: int, order: int) -> str:
    """A speaker's label with the DISPLAYED letter, e.g. "Debater for A" (never the entry or role name)."""
    who = "Consultant" if role == "consultant" else "Debater"
    return f"{who} for {letter_of(side, order)}"


def render_speech(judge_text: str) -> str:
    """A speech as safe HTML: everything escaped, then quote tags turned into styled spans.

    Verified quotes (`<v_quote>`) are highlighted green; unverified ones (`<u_quote>`) are struck
    through in red with a note. Unbalanced or other tags stay visible as escaped text.
    """
    text = html.escape(judge_text or "", quote=True)
    text = _V.sub(lambda m: f'<span class="vq" title="found in the story" style="{VERIFIED_STYLE}">{m.group(1)}</span>', text)
    text = _U.sub(
        lambda m: f'<span class="uq" style="{UNVERIFIED_STYLE}">{m.group(1)}</span> <em class="uq-note">{NOT_FOUND_NOTE}</em>', text
    )
    # one line only: a blank line would end the HTML block and let markdown parse the rest
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def speech_html(speech: Speech, order: int) -> str:
    """One speech as a labelled HTML block for the judge."""
    body = render_speech(speech.judge_text or speech.text)
    if speech.empty or not body.strip():
        body = "<em>(no argument)</em>"
    label = html.escape(role_label(speech.role, speech.side, order))
    return f'<div class="speech" style="margin-bottom:0.6em"><strong>{label}:</strong> {body}</div>'


def text_html(text: str) -> str:
    """Plain text as one escaped HTML line (so markdown never interprets it)."""
    return "<div>" + html.escape(text or "").replace("\n", "<br>") + "</div>"


def group_turns(speeches: Iterable[Speech]) -> list[list[Speech]]:
    """Speeches grouped by their `turn`, in order of first appearance."""
    turns: dict[int, list[Speech]] = {}
    for s in sorted(speeches, key=lambda s: s.index):
        turns.setdefault(s.turn, []).append(s)
    return [turns[k] for k in sorted(turns)]


def beliefs_required(n_turns: int, protocol_beliefs: bool = False) -> int:
    """Beliefs a human judge gives: one after each turn but the last (the final verdict follows it).

    Human judges always give them when there is more than one turn, whatever the protocol's flag.
    """
    return max(n_turns - 1, 0) if (protocol_beliefs or n_turns > 1) else 0


# -- admin statistics ---------------------------------------------------------------------------------
def judge_label(v: Verdict) -> str:
    """A verdict's judge; human verdicts are named by the person ("human: NAME")."""
    if v.judge == "human":
        try:
            name = json.loads(v.raw or "{}").get("judge_name")
        except (ValueError, AttributeError):
            name = None
        return f"human: {name}" if name else "human"
    return v.judge


@dataclass(frozen=True)
class Agreement:
    debates: int  # debates with at least two decided verdicts
    pairs: int
    agree: int
    rate: float
    low: float
    high: float


def agreement(verdicts: Iterable[Verdict]) -> Agreement:
    """Pairwise agreement between the decided verdicts given to the same debate (any pair of judges)."""
    by_debate: dict[str, list[int]] = {}
    for v in verdicts:
        if v.winner is not None:
            by_debate.setdefault(v.transcript_id, []).append(v.winner)
    debates = pairs = agree = 0
    for winners in by_debate.values():
        if len(winners) < 2:
            continue
        debates += 1
        for a, b in itertools.combinations(winners, 2):
            pairs += 1
            agree += a == b
    r = rate(agree, pairs)
    return Agreement(debates, pairs, agree, r.value, r.low, r.high)
