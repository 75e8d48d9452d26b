"""Judging stored transcripts: the one path from a run's transcripts to stored verdicts, used by
tournaments, re-judging and judge evaluation.

Cases carry the protocol each transcript was played under, rebuilt from the run's stored configuration
(rounds, word limit, beliefs), so a re-judge asks for the same per-turn beliefs as the original judge.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import yaml
from tqdm.auto import tqdm

from debate.configs import ConfigError, TournamentConfig, load_tournament
from debate.protocols import Protocol, get_protocol
from debate.records import Question, Transcript, Verdict
from debate.store import Store
from judges.base import Case, Judge

BATCH = 32  # cases per judge call for judges that do not say (`chunk`); each batch is stored as it comes


def protocols_of(cfg: TournamentConfig) -> dict[str, Protocol]:
    """The protocols a tournament config plays, by name, with their rounds, word limits and beliefs."""
    return {p.name: get_protocol(p.name, p.rounds, p.word_limit, p.beliefs) for p in cfg.protocols}


def stored_config(store: Store, run: str) -> Optional[TournamentConfig]:
    """The tournament config stored with the run; None for runs that are not tournaments (imports)."""
    info = store.run(run)
    if info.kind != "tournament":
        return None
    return load_tournament(yaml.safe_load(info.config), source=f"run {run} (stored config)")


def stored_protocols(store: Store, run: str) -> dict[str, Protocol]:
    """The run's protocols as its stored config played them; {} when the run has no tournament config."""
    try:
        cfg = stored_config(store, run)
    except ConfigError:
        return {}  # an empty or partial config (older runs, hand-made stores): fall back per transcript
    return protocols_of(cfg) if cfg is not None else {}


def protocol_for(t: Transcript, protocols: Mapping[str, Protocol]) -> Protocol:
    """The protocol a transcript was played under: the configured one, else the named protocol with the
    transcript's own number of rounds (imported debates have no config)."""
    if t.protocol in protocols:
        return protocols[t.protocol]
    rounds = max((s.turn for s in t.speeches), default=0) + 1
    return get_protocol(t.protocol, rounds=rounds)


def cases_to_judge(
    store: Store,
    run: str,
    judge: str,
    protocols: Optional[Mapping[str, Protocol]] = None,
    questions: Optional[Mapping[str, Question]] = None,
    transcripts: Optional[Sequence[Transcript]] = None,
    keep: Callable[[Transcript], bool] = lambda t: True,
) -> list[Case]:
    """The run's complete transcripts (with speeches; not verdict-only imports) that `judge` has no
    verdict for yet, as cases. Questions and transcripts already read can be passed in."""
    protocols = stored_protocols(store, run) if protocols is None else protocols
    questions = store.questions(run) if questions is None else questions
    transcripts = store.transcripts(run, status="complete") if transcripts is None else transcripts
    done = {v.transcript_id for v in store.verdicts(run, judge=judge)}
    return [
        Case(t, questions[t.question_id], protocol_for(t, protocols))
        for t in transcripts
        if t.status == "complete" and "verdict_only" not in t.tags and t.id not in done and keep(t)
    ]


def judge_cases(judge: Judge, cases: Sequence[Case], store: Optional[Store] = None, progress: bool = True) -> list[Verdict]:
    """Judge the cases in the judge's own batches (`judge.chunk`); with a store, each batch's verdicts are
    stored as soon as they exist, so a kill loses at most one batch."""
    batch = getattr(judge, "chunk", BATCH)
    out: list[Verdict] = []
    bar = tqdm(total=len(cases), desc=f"judging ({judge.name})", unit="debate", disable=not progress, dynamic_ncols=True)
    for k in range(0, len(cases), batch):
        verdicts = judge.judge(cases[k : k + batch])
        if store is not None:
            store.add_verdicts(verdicts)
        out.extend(verdicts)
        bar.update(len(verdicts))
    bar.close()
    return out
