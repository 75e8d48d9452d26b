"""Protocols: the rules of one debate, as plain data and plain functions over a transcript."""

from __future__ import annotations

from dataclasses import dataclass

DEBATERS = ("debater_a", "debater_b")


@dataclass(frozen=True)
class Protocol:
    name: str
    roles: tuple[str, ...]  # speaking roles; () for judge-only protocols
    simultaneous: bool  # in a round, speakers do not see each other's speech of that round
    judge_sees_passage: bool
    rounds: int = 2
    word_limit: int = 60
    beliefs: bool = False


PROTOCOLS: dict[str, Protocol] = {
    "debate": Protocol("debate", DEBATERS, simultaneous=False, judge_sees_passage=False),
    "simultaneous": Protocol("simultaneous", DEBATERS, simultaneous=True, judge_sees_passage=False),
    "consultancy": Protocol("consultancy", ("consultant",), simultaneous=False, judge_sees_passage=False),
    "blind": Protocol("blind", (), simultaneous=False, judge_sees_passage=False, rounds=0),
    "expert": Protocol("expert", (), simultaneous=False, judge_sees_passage=True, rounds=0),
}


def get_protocol(name: str, rounds: int = 2, word_limit: int = 60, beliefs: bool = False) -> Protocol:
    """The named protocol with its round count and word limit; unknown names list the known ones."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    base = PROTOCOLS[name]
    n = rounds if base.roles else 0
    return Protocol(base.name, base.roles, base.simultaneous, base.judge_sees_passage, n, word_limit, beliefs)


def steps(p: Protocol) -> list[list[tuple[str, int]]]:
    """The protocol's steps in order; each is the (role, round) pairs that speak at once."""
    out: list[list[tuple[str, int]]] = []
    for r in range(p.rounds):
        if p.simultaneous:
            out.append([(role, r) for role in p.roles])
        else:
            out.extend([[(role, r)] for role in p.roles])
    return out


def n_speeches(p: Protocol) -> int:
    return p.rounds * len(p.roles)


def next_step(p: Protocol, done: int) -> tuple[int, list[tuple[str, int]]] | None:
    """Given `done` speeches stored, the index of the step to run and its speakers, or None if finished.

    A simultaneous step half done (a kill between two stored speeches) returns only the missing speakers.
    """
    count = 0
    for k, step in enumerate(steps(p)):
        if done < count + len(step):
            return k, step[done - count :]
        count += len(step)
    return None


def visible_count(p: Protocol, step_index: int) -> int:
    """How many speeches (in order) a speaker at `step_index` may read: all earlier steps."""
    return sum(len(s) for s in steps(p)[:step_index])
