"""Typed records of the harness: every record is a frozen dataclass with a schema version.

Records are written to the store the moment they exist; `to_dict`/`from_dict` give the JSON form
the store and the exports use. A reader refuses a record written by a newer schema.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence, TypeVar

SCHEMA_VERSION = 1

T = TypeVar("T")


class SchemaError(ValueError):
    """A stored record is of a newer schema than this code can read."""


def stable_id(*parts: object) -> str:
    """A deterministic id: the first 16 hex digits of a SHA-256 over the parts."""
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def to_dict(record: Any) -> dict:
    """A record as plain JSON-able data (tuples become lists)."""
    return dataclasses.asdict(record)


def to_json(record: Any) -> str:
    return json.dumps(to_dict(record), sort_keys=True, ensure_ascii=False)


def _build(cls: type, data: Any) -> Any:
    """Rebuild a (possibly nested) dataclass from `to_dict` output."""
    if not dataclasses.is_dataclass(cls) or not isinstance(data, dict):
        return data
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise SchemaError(
            f"{cls.__name__} record has schema_version {version}, newer than this harness "
            f"understands ({SCHEMA_VERSION}); upgrade the harness to read this store"
        )
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in hints.items():
        if name not in data:
            continue
        value = data[name]
        nested = _NESTED.get((cls.__name__, name))
        if nested is not None and value is not None:
            if isinstance(value, list):
                value = tuple(_build(nested, v) for v in value)
            else:
                value = _build(nested, value)
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[name] = value
    return cls(**kwargs)


def from_dict(cls: type[T], data: dict) -> T:
    """Rebuild record `cls` from its dict form, refusing a newer schema version."""
    return _build(cls, data)


def from_json(cls: type[T], text: str) -> T:
    return from_dict(cls, json.loads(text))


@dataclass(frozen=True)
class Question:
    """A two-answer question; `passage` is the hidden evidence the judge never sees."""

    id: str
    question: str
    answers: tuple[str, str]
    correct: int
    passage: Optional[str] = None
    source: str = "custom"
    split: str = "test"
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if len(self.answers) != 2:
            raise ValueError(f"question {self.id}: needs exactly two answers, got {len(self.answers)}")
        if self.correct not in (0, 1):
            raise ValueError(f"question {self.id}: correct must be 0 or 1, got {self.correct!r}")


@dataclass(frozen=True)
class Quote:
    """Text a debater claims is in the passage; `verified` when it is (after normalising/repair)."""

    text: str
    verified: bool
    tagged: bool = True  # False when found as an untagged verbatim recitation
    repaired: Optional[str] = None  # the passage text a near miss was repaired to
    edit_distance: int = 0


@dataclass(frozen=True)
class Speech:
    """One turn's text by one role."""

    transcript_id: str
    index: int  # position in the transcript (0-based)
    turn: int  # protocol turn (round) number, 0-based
    role: str  # debater_a, debater_b or consultant
    side: int  # which answer (0 or 1) the speaker defends
    entry: str  # the tournament entry that spoke
    text: str
    quotes: tuple[Quote, ...] = ()
    judge_text: str = ""  # the text as the judge sees it, quotes marked verified or unverified
    empty: bool = False  # empty or only markup: kept, shown to the judge as no argument
    truncated: bool = False  # hit the word limit or max_new_tokens
    n_tokens: int = 0
    schema_version: int = SCHEMA_VERSION

    @property
    def n_words(self) -> int:
        return len(self.text.split())


@dataclass(frozen=True)
class Seat:
    """Which entry plays which role and defends which answer."""

    role: str
    entry: str
    side: int


@dataclass(frozen=True)
class Transcript:
    """A debate's header; speeches are stored as their own rows and attached on read."""

    id: str
    run: str
    match: str
    question_id: str
    protocol: str
    seats: tuple[Seat, ...]
    sample: int = 0
    status: str = "running"  # running, complete, failed
    error: Optional[str] = None
    warnings: tuple[str, ...] = ()
    quote_mode: str = "tags"
    speeches: tuple[Speech, ...] = ()
    setting: str = ""  # where it came from, e.g. "human debate" for imported NYU rooms
    tags: tuple[str, ...] = ()  # e.g. "included_in_paper", "verdict_only"
    schema_version: int = SCHEMA_VERSION

    def seat(self, role: str) -> Seat:
        for s in self.seats:
            if s.role == role:
                return s
        raise KeyError(f"transcript {self.id} has no role {role!r}")


@dataclass(frozen=True)
class Verdict:
    """A judge's probability over the two answers, from both presentation orders.

    `p_answer0` is the probability of answer 0 (the question's first answer), averaged over the two
    orders; `p_orders` holds each order's probability of answer 0. `winner` is the answer index the
    judge favours, or None when the judge gave no usable answer (a recorded failure, never a tie).
    """

    id: str
    run: str
    transcript_id: str
    question_id: str
    judge: str
    p_answer0: Optional[float]
    p_orders: tuple[float, ...] = ()
    winner: Optional[int] = None
    raw: str = ""
    error: Optional[str] = None
    beliefs: tuple[float, ...] = ()  # per-turn beliefs in answer 0, where the protocol asks
    warnings: tuple[str, ...] = ()  # e.g. the transcript was cut to fit the judge's context
    schema_version: int = SCHEMA_VERSION

    def p_correct(self, correct: int) -> Optional[float]:
        """The probability the judge gave the correct answer (index `correct`); None for a failed verdict."""
        if correct not in (0, 1):
            raise ValueError(f"correct must be the answer index 0 or 1, got {correct!r}")
        if self.p_answer0 is None:
            return None
        return self.p_answer0 if correct == 0 else 1.0 - self.p_answer0


def order_average(p_orders: Sequence[float]) -> float:
    """A verdict's probability of answer 0 from each presentation order's probability of answer 0.

    The mean over orders cancels a judge's preference for the answer shown first.
    """
    if not p_orders:
        raise ValueError("order_average needs at least one presentation order's probability")
    return sum(p_orders) / len(p_orders)


@dataclass(frozen=True)
class RunInfo:
    """A run's header: its name and resolved configuration."""

    name: str
    kind: str
    config: str  # resolved configuration as YAML text
    created: float
    schema_version: int = SCHEMA_VERSION


_NESTED: dict[tuple[str, str], type] = {
    ("Speech", "quotes"): Quote,
    ("Transcript", "seats"): Seat,
    ("Transcript", "speeches"): Speech,
}
