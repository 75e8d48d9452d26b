"""Schedules: which entries meet on which questions under which protocol, with deterministic ids."""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

from debate.protocols import Protocol
from debate.records import Question, Seat, Transcript, stable_id


def transcript_id(run: str, match: str, question_id: str, seats: Sequence[Seat], sample: int) -> str:
    order = ",".join(f"{s.role}={s.entry}:{s.side}" for s in seats)
    return stable_id(run, match, question_id, order, sample)


def _transcript(run: str, protocol: Protocol, match: str, q: Question, seats: tuple[Seat, ...], sample: int, quote_mode: str) -> Transcript:
    return Transcript(
        id=transcript_id(run, match, q.id, seats, sample),
        run=run,
        match=match,
        question_id=q.id,
        protocol=protocol.name,
        seats=seats,
        sample=sample,
        quote_mode=quote_mode,
    )


def first_side(index: int, sample: int) -> int:
    """The answer the first speaker defends in the debates of the `index`-th question's `sample`-th
    sample: it alternates, so the first speaker defends each answer equally often whatever the
    correct answers are."""
    return (index + sample) % 2


def round_robin(
    run: str,
    entries: Sequence[str],
    questions: Sequence[Question],
    protocols: Sequence[Protocol],
    samples: int = 1,
    quote_mode: str = "tags",
) -> list[Transcript]:
    """Every pairing of entries on both sides of every question, for each protocol.

    Debates: for entries X and Y, X speaks first against Y, then Y speaks first against X, the first
    speaker defending the answer `first_side(i, sample)` of the i-th question: answer 0 and answer 1 in
    turn. Were it always answer 0, a question set whose correct answers lean to one index would seat the
    honest side mostly first (or mostly second), and judge accuracy would mix with the judge's order
    bias. Consultancy: each entry argues each answer alone. Blind and expert: one judge-only
    transcript per question.
    """
    out: list[Transcript] = []
    for p in protocols:
        for i, q in enumerate(questions):
            for sample in range(samples):
                if len(p.roles) == 2:
                    first = first_side(i, sample)
                    for x, y in combinations(entries, 2):
                        match = stable_id(p.name, x, y)
                        for a, b in ((x, y), (y, x)):
                            seats = (Seat(p.roles[0], a, first), Seat(p.roles[1], b, 1 - first))
                            out.append(_transcript(run, p, match, q, seats, sample, quote_mode))
                elif len(p.roles) == 1:
                    for e in entries:
                        match = stable_id(p.name, e)
                        for side in (0, 1):
                            out.append(_transcript(run, p, match, q, (Seat(p.roles[0], e, side),), sample, quote_mode))
                else:
                    out.append(_transcript(run, p, stable_id(p.name), q, (), sample, quote_mode))
    return out
