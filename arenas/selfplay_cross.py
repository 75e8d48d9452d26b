"""The all-opponents reward (`opponents: all`): in a one-round simultaneous protocol neither speech sees the
other, so every side-0 speech of a question's rollouts can be judged against every side-1 speech of them.

With `opponents: game` a speech's reward is its side's 2p - 1 in its own game, so half of what it measures is
the opponent the speech happened to meet: an honest speech that quotes the deciding fact can lose to a strong
dishonest one while a weak honest one beats a weak opponent. With `opponents: all` the rollouts of a question
(`samples` games, one speech a side each) are recombined into every pairing of a side-0 speech with a side-1
speech, each in both seatings, since judges favour a speaking position (the judge's two answer orders swap
the letters, not the speeches). The games not played are stored as `cross` transcripts (complete, the two
speeches copied in) and judged by the training judge in both orders, and each speech's reward is the mean of
its side's 2p - 1 over every opponent and seating (`rewards.mean_rewards`). It costs 2 x samples^2 - samples
games a question to judge and no generation. Ids are stable, so a resumed run judges only what is missing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any, Sequence

from debate.records import Seat, Speech, Transcript, stable_id
from debate.training import rewards as R
from debate.training.samples import Sample
from arenas.selfplay_games import CURRENT

CROSS = "cross"


def _usable(t: Transcript) -> bool:
    return t.status == "complete" and not any("truncated" in w for w in t.warnings) and len(t.speeches) == 2


def _speech_of(t: Transcript, side: int) -> Speech:
    return next(s for s in t.speeches if s.side == side)


def plan_crosses(run: str, it: int, games: Sequence[Transcript]) -> tuple[list[Transcript], dict[str, list[str]]]:
    """The games not played: for each question, the side-0 speech of every complete rollout against the
    side-1 speech of every one (its own included), in both seatings (which side speaks first), the rollout
    itself left out; as complete transcripts with their two speeches. And, per speech (its sample key,
    `rollout id:index`), the games it is judged in: its own and its cross games, 2 x samples in all, half of
    them speaking first."""
    by_question: dict[str, list[Transcript]] = defaultdict(list)
    for t in games:
        if _usable(t):
            by_question[t.question_id].append(t)
    crosses: list[Transcript] = []
    games_of: dict[str, list[str]] = defaultdict(list)
    for q_id, played in sorted(by_question.items()):
        played = sorted(played, key=lambda t: (t.sample, t.id))
        for t in played:
            for s in t.speeches:
                games_of[f"{t.id}:{s.index}"].append(t.id)
        for g0 in played:
            for g1 in played:
                s0, s1 = _speech_of(g0, 0), _speech_of(g1, 1)
                for first in (0, 1):  # both seatings: judges favour a position, so each speech takes both
                    if g0.id == g1.id and g0.seats[0].side == first:
                        continue  # the rollout itself
                    c_id = stable_id(run, CROSS, it, g0.id, g1.id, first)
                    seats = (Seat("debater_a", CURRENT, first), Seat("debater_b", CURRENT, 1 - first))
                    ordered = (s0, s1) if first == 0 else (s1, s0)
                    speeches = tuple(replace(s, transcript_id=c_id, index=k, role=seat.role)
                                     for k, (s, seat) in enumerate(zip(ordered, seats)))
                    crosses.append(Transcript(c_id, run, f"{CROSS}-{it}", q_id, g0.protocol, seats,
                                              sample=len(crosses), status="complete", quote_mode=g0.quote_mode,
                                              speeches=speeches, tags=(CROSS, f"iteration-{it}")))
                    games_of[f"{g0.id}:{s0.index}"].append(c_id)
                    games_of[f"{g1.id}:{s1.index}"].append(c_id)
    return crosses, dict(games_of)


def cross_rewards(s: Any, it: int, games: Sequence[Transcript], samples: Sequence[Sample]) -> tuple[list[Sample], dict]:
    """Store and judge the cross games of iteration `it`'s rollouts (s: arenas.selfplay.Session) and score each
    speech by the mean of its side's reward over every opponent, with per-role baselines."""
    crosses, games_of = plan_crosses(s.run, it, games)
    s.store.write_all(s.run, transcripts=crosses, speeches=[x for t in crosses for x in t.speeches])
    s.play(crosses, s.judges[:1])
    ids = {t.id for t in games} | {t.id for t in crosses}
    verdicts = {v.transcript_id: v for v in s.store.verdicts(s.run, judge=s.judges[0].name) if v.transcript_id in ids}
    p0 = {t: v.p_answer0 for t, v in verdicts.items()}
    scored = R.with_baselines(R.mean_rewards(samples, games_of, p0))
    info = {"samples": len(scored), "dropped": len(samples) - len(scored),
            "verdicts_failed": sum(1 for v in verdicts.values() if v.p_answer0 is None),
            "cross_games": len(crosses), **R.reward_summary(scored, s.correct)}
    return scored, info
