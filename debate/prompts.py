"""Build chat messages for debaters and judges from the prompt data in `prompts/*.yaml`."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

from debate.backends.base import Messages
from debate.configs import named_yaml, read_yaml
from debate.protocols import Protocol
from debate.records import Question, Speech

PROMPT_DIR = Path(__file__).parent / "prompts"
LETTERS = ("A", "B")


@lru_cache(maxsize=8)
def load_prompts(name: str = "default") -> dict:
    """A prompt file by name (from debate/prompts) or by path."""
    return read_yaml(named_yaml(PROMPT_DIR, name, "prompt set", files=True))


def debater_styles(prompts: dict) -> list[str]:
    return sorted(prompts["debater"])


def _speaker(prompts: dict, role: str, letter: str) -> str:
    key = "consultant" if role == "consultant" else "debater"
    return prompts["judge"]["speaker"][key].format(letter=letter)


def debater_messages(
    prompts: dict,
    style: str,
    protocol: Protocol,
    question: Question,
    passage: str,
    side: int,
    history: Sequence[Speech],
) -> Messages:
    """The messages for one debater's next speech; the history is what this speaker may read."""
    if style not in prompts["debater"]:
        raise ValueError(f"unknown prompt style {style!r}; known: {', '.join(debater_styles(prompts))}")
    kind = "consultancy" if protocol.name == "consultancy" else "debate"
    answer, other = question.answers[side], question.answers[1 - side]
    names = prompts["history_names"]
    lines = [f"{names['self'] if s.side == side else names['other']}: {prompts['no_argument'] if s.empty else s.text}" for s in history]
    history_text = (prompts["history_header"] + "\n" + "\n".join(lines) + "\n") if lines else ""
    fields = dict(
        answer=answer,
        other=other,
        question=question.question,
        passage=passage,
        word_limit=protocol.word_limit,
        opponent_line=prompts["opponent_line"][kind].format(other=other),
        other_line=prompts["other_line"][kind].format(other=other),
        history=history_text,
    )
    t = prompts["debater"][style]
    return (("system", t["system"].format(**fields)), ("user", t["user"].format(**fields)))


_QUOTE_TAG = re.compile(r"<(v|u)_quote>(.*?)</\1_quote>", re.DOTALL)


def mark_quotes(judge_text: str, prompts: dict) -> str:
    """Quotes as the judge prompt shows them: the stored tags become plain, salient words."""
    j = prompts["judge"]

    def swap(m: re.Match) -> str:
        key = "verified_quote" if m.group(1) == "v" else "unverified_quote"
        return j[key].format(text=m.group(2)) if key in j else m.group(0)

    return _QUOTE_TAG.sub(swap, judge_text)


def judge_messages(
    prompts: dict,
    question: Question,
    speeches: Sequence[tuple[Speech, str]],
    order: int,
    passage: Optional[str] = None,
) -> Messages:
    """The judge's messages in presentation order `order` (0: answer 0 shown as A; 1: shown as B).

    `speeches` pairs each speech with its judge-facing text (quotes marked verified or unverified).
    """
    shown = question.answers if order == 0 else question.answers[::-1]
    j = prompts["judge"]
    lines = []
    for speech, text in speeches:
        letter = LETTERS[speech.side if order == 0 else 1 - speech.side]
        body = mark_quotes(text, prompts) if not speech.empty else prompts["no_argument"]
        lines.append(f"{_speaker(prompts, speech.role, letter)}: {body}")
    transcript = j["transcript"].format(speeches="\n".join(lines)) if lines else j["no_speeches"]
    story = j["story"].format(passage=passage) if passage else ""
    user = j["user"].format(question=question.question, answer_a=shown[0], answer_b=shown[1], story=story, transcript=transcript)
    return (("system", j["system"]), ("user", user))
