"""The games of a training run: rollouts on the training split and evaluation games on the held-out
split, planned with stable ids (so a resumed run finds what it already played), played by the engine,
judged by every judge, and turned into training samples."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Collection, Mapping, Optional, Sequence, Union

from debate.configs import EntryConfig
from debate.engine import Debate, Engine
from debate.prompts import debater_messages, load_prompts
from debate.protocols import Protocol, get_protocol, steps, visible_count
from debate.quotes import QuoteRules
from debate.records import Question, Seat, Transcript, stable_id
from debate.store import Store
from debate.training.config import TrainConfig
from debate.training.samples import Sample
from arenas.judging import cases_to_judge, judge_cases
from judges.base import Judge

CURRENT, START = "current", "start"  # entries: the policy being trained, and the policy it started from
TRAIN_JUDGE, HELDOUT_JUDGE = "reward-model", "heldout-judge"  # the judges' names in a run's verdicts
QUOTE_RULES = QuoteRules("tags+recite", min_words=5, max_edit_ratio=0.1)


def protocol_of(cfg: TrainConfig) -> Protocol:
    return get_protocol(cfg.protocol, cfg.rounds, cfg.word_limit)


def entries(cfg: TrainConfig) -> list[EntryConfig]:
    return [EntryConfig(name, name, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
            for name in (CURRENT, START)]


def _transcript(run: str, kind: str, it: int, q: Question, k: int, a: tuple[str, int], b: tuple[str, int],
                protocol: Protocol) -> Transcript:
    seats = (Seat("debater_a", a[0], a[1]), Seat("debater_b", b[0], b[1]))
    t_id = stable_id(run, kind, it, q.id, k, a, b)
    return Transcript(t_id, run, f"{kind}-{it}", q.id, protocol.name, seats, sample=k, quote_mode=QUOTE_RULES.mode,
                      tags=(kind, f"iteration-{it}"))


def plan_rollouts(run: str, it: int, questions: Sequence[Question], samples: int, protocol: Protocol) -> list[Transcript]:
    """`samples` self-play debates per question; debater_a takes side 0 and side 1 in turn, so each side
    gets `samples` speeches a turn from both seats."""
    return [
        _transcript(run, "rollout", it, q, k, (CURRENT, k % 2), (CURRENT, 1 - k % 2), protocol)
        for q in questions for k in range(samples)
    ]


def plan_eval(run: str, it: int, questions: Sequence[Question], protocol: Protocol) -> list[Transcript]:
    """Held-out games: the current policy against itself on both seatings, and (after the first update)
    against the starting policy on both sides, the seat alternating by question."""
    out = []
    for n, q in enumerate(questions):
        for side in (0, 1):
            out.append(_transcript(run, "self", it, q, side, (CURRENT, side), (CURRENT, 1 - side), protocol))
            if it > 0:
                current, start = (CURRENT, side), (START, 1 - side)
                a, b = (current, start) if n % 2 == 0 else (start, current)
                out.append(_transcript(run, "versus", it, q, side, a, b, protocol))
    return out


def play_and_judge(store: Store, planned: Sequence[Transcript], questions: Mapping[str, Question], protocol: Protocol,
                   policies: Mapping[str, Any], cfg: TrainConfig, judges: Sequence[Judge], progress: bool = True,
                   reads_passage: Collection[str] = ()) -> list[Transcript]:
    """Store the planned games (idempotent), play those not finished, judge those a judge has no verdict
    for (the judges named in `reads_passage` with the passage shown, as in the expert protocol); returns the
    planned games as stored, with their speeches."""
    store.add_transcripts(planned)
    ids = {t.id for t in planned}
    run = planned[0].run if planned else ""
    stored = [t for t in store.transcripts(run) if t.id in ids]
    running = [Debate(t, questions[t.question_id], protocol, list(t.speeches)) for t in stored if t.status == "running"]
    if running:
        engine = Engine(dict(policies), entries(cfg), load_prompts("default"), QUOTE_RULES, store=store, seed=cfg.seed)
        engine.run(running, progress=progress)
        now = {d.transcript.id: replace(d.transcript, speeches=tuple(d.speeches)) for d in running}
        stored = [now.get(t.id, t) for t in stored]
    complete = [t for t in stored if t.status == "complete"]
    for judge in judges:
        shown = replace(protocol, judge_sees_passage=True) if judge.name in reads_passage else protocol
        cases = cases_to_judge(store, run, judge.name, {protocol.name: shown}, questions, complete)
        judge_cases(judge, cases, store, progress)
    return stored


def step_of_speech(protocol: Protocol) -> list[int]:
    """The step index of each speech position (simultaneous speakers share a step)."""
    return [k for k, step in enumerate(steps(protocol)) for _ in step]


def speech_prompts(transcripts: Sequence[Transcript], questions: Mapping[str, Question],
                   protocol: Union[Protocol, Callable[[Transcript], Protocol]], entry: Optional[str] = CURRENT,
                   style: Callable[[str], str] = lambda entry: "default") -> list[tuple[Transcript, Any, Any]]:
    """(transcript, speech, messages) for each speech `entry` gave (every speech with entry None), with the
    messages the engine sent for it: the transcript's protocol (one, or per transcript) and the entry's
    prompt style. Games whose passage was cut to fit the context are left out: their prompt cannot be
    rebuilt exactly."""
    prompts = load_prompts("default")
    out = []
    for t in transcripts:
        if t.status != "complete" or any("truncated" in w for w in t.warnings):
            continue
        rules = protocol(t) if callable(protocol) else protocol
        step_of = step_of_speech(rules)
        q = questions[t.question_id]
        for s in t.speeches:
            if (entry is not None and s.entry != entry) or s.index >= len(step_of):
                continue
            history = t.speeches[: visible_count(rules, step_of[s.index])]
            msgs = debater_messages(prompts, style(s.entry), rules, q, q.passage or "", s.side, history)
            out.append((t, s, msgs))
    return out


def samples_from(found: Sequence[tuple[Transcript, Any, Any]], render: Any) -> list[Sample]:
    """Training samples (reward not yet set) from `speech_prompts`' output; `render` turns a list of messages
    into prompt texts on the learner's tokenizer (one call)."""
    texts = render([m for _, _, m in found]) if found else []
    return [
        Sample(key=f"{t.id}:{s.index}", transcript_id=t.id, question_id=t.question_id, side=s.side, role=s.role,
               turn=s.turn, prompt=text, completion=s.text, ended=not s.truncated)
        for (t, s, _), text in zip(found, texts)
    ]


def samples_of(transcripts: Sequence[Transcript], questions: Mapping[str, Question], protocol: Protocol,
               render: Any, entry: str = CURRENT) -> list[Sample]:
    """Training samples from the speeches `entry` gave in self-play games."""
    return samples_from(speech_prompts(transcripts, questions, protocol, entry), render)
