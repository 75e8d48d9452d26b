"""The process reward (`reward: turn`): branch a speech, play every branch to the end, compare the branches'
final verdicts (DESIGN.md, Training: turn-level credit).

A branch point is one speech the current policy gave in a rollout, in a branched round (`turn_rounds`,
default every round). From the same prompt (the same history) `turn_branches` alternative speeches are
sampled; each branch keeps the rollout's speeches before the branched step (and, in a simultaneous
protocol, the other speakers of that step), is played to the end by the current policy (the later
speeches of both sides) and judged by the training judge in both orders. The branched speech gets
R = 2p - 1 for its side; the branches of one point are its comparison group (pairs, baselines), so the
compared samples differ in that one speech only.

Branches are stored transcripts like the rollouts, tagged `branch`, `iteration-K` and `point-ROLLOUT:INDEX`
(`sample` is the branch number), with ids from the run, the rollout, the speech index and the branch
number; each is stored with its opening speeches in one transaction, so a resumed run samples, plays and
judges only what is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

from debate.backends.base import GenRequest, GenResult, Sampling
from debate.engine import Debate, draw_seed, make_speech
from debate.prompts import debater_messages, load_prompts
from debate.protocols import Protocol, visible_count
from debate.records import Question, Speech, Transcript, stable_id
from debate.store import Store
from debate.training import rewards as R
from debate.training.config import TrainConfig
from debate.training.samples import Sample
from arenas.selfplay_games import CURRENT, QUOTE_RULES, entries, protocol_of, samples_from, speech_prompts, step_of_speech

BRANCH = "branch"


@dataclass(frozen=True)
class Point:
    """A branch point: the speech at `index` of a rollout."""

    rollout: Transcript
    index: int

    @property
    def key(self) -> str:
        """rollout id:speech index, the same as the rollout speech's sample key."""
        return f"{self.rollout.id}:{self.index}"

    @property
    def speech(self) -> Speech:
        return self.rollout.speeches[self.index]


def branch_points(games: Sequence[Transcript], protocol: Protocol, rounds: Optional[Sequence[int]] = None,
                  entry: str = CURRENT) -> list[Point]:
    """The speeches `entry` gave in the complete rollouts, in `rounds` (None: every round). Rollouts whose
    passage was cut to fit the context are left out: their prompts cannot be rebuilt exactly."""
    n = len(step_of_speech(protocol))
    return [Point(t, s.index) for t in games
            if t.status == "complete" and not any("truncated" in w for w in t.warnings)
            for s in t.speeches
            if s.entry == entry and s.index < n and (rounds is None or s.turn in rounds)]


def plan_branches(run: str, it: int, points: Sequence[Point], branches: int) -> list[tuple[Point, Transcript]]:
    """Each point's branches as transcript headers with stable ids (running, no speeches yet)."""
    out = []
    for p in points:
        t = p.rollout
        for j in range(branches):
            b_id = stable_id(run, BRANCH, t.id, p.index, j)
            out.append((p, Transcript(b_id, run, f"{BRANCH}-{it}", t.question_id, t.protocol, t.seats, sample=j,
                                      quote_mode=t.quote_mode, tags=(BRANCH, f"iteration-{it}", f"point-{p.key}"))))
    return out


def kept_speeches(point: Point, protocol: Protocol, branch_id: str) -> list[Speech]:
    """The rollout's speeches a branch keeps: every speech of the steps up to the branched one, but the
    branched speech (re-labelled with the branch's transcript id)."""
    step_of = step_of_speech(protocol)
    end = sum(1 for k in step_of if k <= step_of[point.index])
    return [replace(s, transcript_id=branch_id) for s in point.rollout.speeches[:end] if s.index != point.index]


def branch_request(point: Point, protocol: Protocol, question: Question, cfg: TrainConfig, branch: Transcript) -> GenRequest:
    """The request for a branch's speech: the messages the engine sent for the branched speech (same history),
    the entry's sampling, a seed of the branch's own (the engine's rule, `draw_seed`: the branch's game and the
    speech's index)."""
    seat = point.rollout.seat(point.speech.role)
    entry = {e.name: e for e in entries(cfg)}[seat.entry]
    history = point.rollout.speeches[: visible_count(protocol, step_of_speech(protocol)[point.index])]
    msgs = debater_messages(load_prompts("default"), entry.prompt, protocol, question, question.passage or "", seat.side,
                            history)
    seed = draw_seed(cfg.seed, branch, point.index)
    return GenRequest(msgs, Sampling(entry.temperature, entry.top_p, entry.max_new_tokens), seed)


def open_branches(store: Store, planned: Sequence[tuple[Point, Transcript]], questions: Mapping[str, Question],
                  protocol: Protocol, policy: Any, cfg: TrainConfig) -> int:
    """Sample the branched speech of every planned branch not stored yet (one batched call) and store each
    such branch with its opening (kept speeches and the new one) in one transaction; a failed generation
    is stored as a failed branch with the error. Returns how many branches were opened."""
    if not planned:
        return 0
    run = planned[0][1].run
    stored = {r[0] for r in store.query("SELECT id FROM transcripts WHERE run = ?", (run,))}
    todo = [(p, h) for p, h in planned if h.id not in stored]
    if not todo:
        return 0
    reqs = [branch_request(p, protocol, questions[h.question_id], cfg, h) for p, h in todo]
    outcomes: list[tuple[Optional[GenResult], Optional[str]]]
    try:
        results = policy.submit_generate(reqs).result()
        if len(results) != len(reqs):
            raise RuntimeError(f"returned {len(results)} results for {len(reqs)} requests")
        outcomes = [(r, r.error) for r in results]
    except Exception as exc:  # a failed model call fails its branches, recorded with the error
        outcomes = [(None, f"{type(exc).__name__}: {exc}")] * len(todo)
    headers, speeches = [], []
    for (p, h), (res, error) in zip(todo, outcomes):
        kept = kept_speeches(p, protocol, h.id)
        speeches.extend(kept)
        if res is None or error:
            headers.append(replace(h, status="failed", error=f"policy {CURRENT} branch speech generation failed: {error}"))
            continue
        debate = Debate(h, questions[h.question_id], protocol, kept)
        s = p.speech
        speeches.append(make_speech(debate, p.index, s.role, s.turn, s.entry, res, QUOTE_RULES))
        headers.append(h)
    store.write_all(run, transcripts=headers, speeches=speeches)
    return len(todo)


def branch_samples(branches: Sequence[Transcript], planned: Sequence[tuple[Point, Transcript]],
                   questions: Mapping[str, Question], protocol: Protocol, render: Any) -> list[Sample]:
    """The branched speech of each complete branch as a training sample of its point (`Sample.branch`)."""
    point = {h.id: p for p, h in planned}
    found = [(t, s, m) for t, s, m in speech_prompts(branches, questions, protocol, entry=None)
             if t.id in point and s.index == point[t.id].index]
    return [replace(x, branch=point[x.transcript_id].key) for x in samples_from(found, render)]


def turn_rewards(s: Any, it: int, games: Sequence[Transcript]) -> tuple[list[Sample], dict]:
    """Branch the rollouts `games` of iteration `it` (s: arenas.selfplay.Session), play and judge the branches,
    and score each branched speech by its branch's verdict, with per-point baselines."""
    cfg, protocol, t0 = s.cfg, protocol_of(s.cfg), time.perf_counter()
    points = branch_points(games, protocol, cfg.turn_rounds)
    planned = plan_branches(s.run, it, points, cfg.turn_branches)
    opened = open_branches(s.store, planned, s.questions, protocol, s.policies[CURRENT], cfg)
    branches = s.play([h for _, h in planned], s.judges[:1])
    samples = branch_samples(branches, planned, s.questions, protocol, lambda msgs: s.learner.call("render", msgs))
    ids = {h.id for _, h in planned}
    verdicts = {v.transcript_id: v for v in s.store.verdicts(s.run, judge=s.judges[0].name) if v.transcript_id in ids}
    p0 = {t: v.p_answer0 for t, v in verdicts.items()}
    scored = R.with_baselines(R.branch_rewards(samples, p0, cfg.turn_branches))
    kept = len({x.branch for x in scored})
    info = {"samples": len(scored), "dropped": len(planned) - len(scored),
            "verdicts_failed": sum(1 for v in verdicts.values() if v.p_answer0 is None),
            **R.reward_summary(scored, s.correct),
            "turn_points": len(points), "turn_points_skipped": len(points) - kept, "turn_branches_opened": opened,
            "branches_failed": sum(1 for t in branches if t.status == "failed"),
            "branch_seconds": round(time.perf_counter() - t0, 1)}
    return scored, info
