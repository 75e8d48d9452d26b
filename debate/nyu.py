"""Import the NYU human debate dataset (Michael et al. 2023, CC-BY 4.0) as first-class transcripts.

Each complete room becomes a question (the story as passage), a transcript with its speeches (quote
spans into the story turned into verified quotes), the live human judge's verdict with per-turn
beliefs, and the offline judges' verdicts. A metadata row whose debate file is absent becomes a
verdict-only record (tagged `verdict_only`), so tables over the metadata cover every room. Rooms
that cannot be imported are skipped with a reason; a room is written whole or not at all.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debate.questions import detokenize_with_offsets, span_text
from debate.records import Question, Quote, RunInfo, Seat, Speech, Transcript, Verdict, stable_id
from debate.store import Store

SPEECH_ROUNDS = ("SequentialSpeeches", "SimultaneousSpeeches")
OTHER_ROUNDS = ("JudgeFeedback", "OfflineJudgments", "NegotiateEnd")
HUMAN_JUDGE = "human"
OFFLINE_JUDGE = "human-offline"


class SkipRoom(Exception):
    """A room that cannot be imported; the message is the reason counted in the summary."""


@dataclass
class ImportSummary:
    full: int = 0
    verdict_only: int = 0
    speeches: int = 0
    quotes: int = 0
    verdicts: int = 0
    skipped: Counter = field(default_factory=Counter)

    def format(self) -> str:
        lines = [
            f"imported rooms: {self.full + self.verdict_only} ({self.full} with full debate files, "
            f"{self.verdict_only} verdict-only from metadata)",
            f"speeches: {self.speeches}, quotes: {self.quotes}, verdicts: {self.verdicts}",
            f"skipped: {sum(self.skipped.values())}",
        ]
        lines += [f"  {n:4d}  {reason}" for reason, n in self.skipped.most_common()]
        return "\n".join(lines)


def setting_of(meta: dict) -> str:
    s = meta.get("setting") or {}
    return f"{'human' if s.get('isHuman') else 'GPT-4'} {'debate' if s.get('isDebate') else 'consultancy'}"


def _segments(content: list, tokens_text: str, offsets: list[int]) -> tuple[str, tuple[Quote, ...], str]:
    """A speech's text with quote tags, its verified quotes, and the judge's view (<v_quote>)."""
    text, judge, quotes = [], [], []
    for seg in content:
        if "Text" in seg:
            t = seg["Text"].get("text", "")
            text.append(t)
            judge.append(t)
        elif "Quote" in seg:
            start, end = seg["Quote"]["span"]
            if not 0 <= start < end <= len(offsets):
                raise SkipRoom("quote span out of the story's range")
            q = span_text(tokens_text, offsets, start, end)
            quotes.append(Quote(text=q, verified=True))
            text.append(f"<quote>{q}</quote>")
            judge.append(f"<v_quote>{q}</v_quote>")
        else:
            raise SkipRoom(f"unknown speech segment {next(iter(seg), '?')}")
    return "".join(text), tuple(quotes), "".join(judge)


def _verdict(run: str, t: Transcript, judge: str, who: str, dist: list, beliefs: tuple, raw: dict) -> Verdict:
    p0 = float(dist[0])
    winner = 0 if p0 > 0.5 else 1 if p0 < 0.5 else None
    return Verdict(
        id=stable_id("verdict", run, t.id, judge, who), run=run, transcript_id=t.id, question_id=t.question_id,
        judge=judge, p_answer0=p0, winner=winner, raw=json.dumps({"judge_name": who, **raw}),
        error=None if winner is not None else "judge indifferent: 50/50", beliefs=beliefs,
    )


def _room(run: str, meta: dict, data: dict) -> tuple[Question, Transcript, list[Verdict]]:
    setup = data.get("setup")
    if not isinstance(setup, dict) or "rounds" not in data:
        raise SkipRoom("not an NYU debate file (no setup/rounds)")
    try:
        tokens = setup["sourceMaterial"]["QuALITYSourceMaterial"]["contents"]
        answers = tuple(setup["answers"])
        correct = int(setup["correctAnswerIndex"])
    except (KeyError, TypeError, ValueError):
        raise SkipRoom("not an NYU debate file (no QuALITY story, answers or correct index)") from None
    if len(answers) != 2:
        raise SkipRoom("not a two-answer room")
    story, offsets = detokenize_with_offsets(tokens)
    name = meta["name"]
    q = Question(id=name, question=setup["question"], answers=answers, correct=correct, passage=story, source="nyu", split="test")
    debate = bool((meta.get("setting") or {}).get("isDebate"))
    roles = setup.get("roles", {})
    if debate:
        seats = (Seat("debater_a", roles.get("Debater A", "?"), 0), Seat("debater_b", roles.get("Debater B", "?"), 1))
    else:
        side = 0 if "Debater A" in roles else 1
        seats = (Seat("consultant", roles.get("Debater A") or roles.get("Debater B", "?"), side),)
    role_of = {str(s.side): s.role for s in seats}
    t_id = stable_id(run, "nyu", name)
    speeches, beliefs, offline = [], [], []
    turn = 0
    for rnd in data["rounds"]:
        kind = next(iter(rnd), "?")
        body = rnd[kind]
        if kind in SPEECH_ROUNDS:
            for key, sp in sorted(body.get("speeches", {}).items(), key=lambda kv: kv[1].get("timestamp", 0)):
                if key not in role_of:
                    raise SkipRoom(f"speech by unknown debater index {key}")
                text, quotes, judge_text = _segments(sp.get("content", []), story, offsets)
                seat = next(s for s in seats if s.role == role_of[key])
                speeches.append(Speech(t_id, len(speeches), turn, seat.role, seat.side, seat.entry, text, quotes, judge_text,
                                       empty=not text.strip(), n_tokens=0))
            turn += 1
        elif kind == "JudgeFeedback":
            beliefs.append(float(body["distribution"][0]))
        elif kind == "OfflineJudgments":
            offline.append(body.get("judgments", {}))
        elif kind not in OTHER_ROUNDS:
            raise SkipRoom(f"unknown round type {kind}")
    result = meta["status"]["Complete"]["result"]
    info = result.get("judgingInfo") or {}
    if "finalJudgement" not in info:
        raise SkipRoom("complete room without a final judgement")
    tags = ("included_in_paper",) if meta.get("includedInPaper") else ()
    t = Transcript(t_id, run, "nyu", name, "debate" if debate else "consultancy", seats, status="complete",
                   quote_mode="nyu-spans", speeches=tuple(speeches), setting=setting_of(meta), tags=tags)
    judge_name = (meta.get("roleAssignments") or {}).get("Judge", "?")
    raw = {"num_continues": info.get("numContinues"), "judge_reward": info.get("judgeReward")}
    verdicts = [_verdict(run, t, HUMAN_JUDGE, judge_name, info["finalJudgement"], tuple(beliefs[:-1]), raw)]
    for judgments in offline:
        for who, j in judgments.items():
            steps = j.get("judgments") or []
            if steps:
                dists = tuple(float(s["distribution"][0]) for s in steps)
                verdicts.append(_verdict(run, t, OFFLINE_JUDGE, who, steps[-1]["distribution"], dists[:-1], {"mode": j.get("mode")}))
    return q, t, verdicts


def _verdict_only(run: str, meta: dict) -> tuple[Question, Transcript, list[Verdict]]:
    result = meta["status"]["Complete"]["result"]
    info = result.get("judgingInfo") or {}
    if "finalJudgement" not in info:
        raise SkipRoom("complete room without a final judgement")
    name = meta["name"]
    story = meta.get("storyTitle", "?")
    q = Question(id=name, question=meta.get("question", ""), answers=("(answer 0: not in this release)", "(answer 1: not in this release)"),
                 correct=int(result["correctAnswerIndex"]), passage=None, source=f"nyu:{story}", split="test")
    tags = ("verdict_only",) + (("included_in_paper",) if meta.get("includedInPaper") else ())
    protocol = "debate" if (meta.get("setting") or {}).get("isDebate") else "consultancy"
    t = Transcript(stable_id(run, "nyu", name), run, "nyu", name, protocol, (), status="complete", quote_mode="nyu-spans",
                   setting=setting_of(meta), tags=tags + (f"turns:{info.get('numContinues')}",))
    judge_name = (meta.get("roleAssignments") or {}).get("Judge", "?")
    return q, t, [_verdict(run, t, HUMAN_JUDGE, judge_name, info["finalJudgement"], (), {"num_continues": info.get("numContinues")})]


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError:
        raise SkipRoom("debate file is not valid JSON") from None


def import_nyu(path: str | Path, store: Store, run: str = "nyu") -> ImportSummary:
    """Import the metadata and debate files under `path` into `store` as run `run` (idempotent)."""
    root = Path(path)
    meta_path = root / "debates-metadata.jsonl"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} does not exist; give the folder holding debates-metadata.jsonl and debates/")
    store.add_run(RunInfo(name=run, kind="import-nyu", config=json.dumps({"path": str(root)}), created=time.time()))
    summary = ImportSummary()
    for line_no, line in enumerate(meta_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            meta = json.loads(line)
            status = next(iter(meta.get("status") or {}), None)
            if status != "Complete":
                raise SkipRoom(f"room not complete ({status or 'no status'})")
            info = (meta["status"]["Complete"].get("result") or {}).get("judgingInfo") or {}
            if "finalJudgement" not in info:
                raise SkipRoom("complete room without a live judge's final judgement (offline judging only)")
            file = root / "debates" / f"{meta['name']}.json"
            q = None
            if file.exists():
                try:
                    q, t, verdicts = _room(run, meta, _read_json(file))
                    summary.full += 1
                except SkipRoom as exc:  # the file is unusable, the metadata's verdict still counts
                    summary.skipped[f"debate file skipped, room imported verdict-only: {exc}"] += 1
            if q is None:
                q, t, verdicts = _verdict_only(run, meta)
                summary.verdict_only += 1
        except json.JSONDecodeError:
            summary.skipped[f"metadata line is not JSON (line {line_no})"] += 1
            continue
        except SkipRoom as exc:
            summary.skipped[str(exc)] += 1
            continue
        except (KeyError, TypeError, ValueError) as exc:
            summary.skipped[f"malformed room ({type(exc).__name__}: {exc})"] += 1
            continue
        store.write_all(run, questions=[q], transcripts=[t], speeches=list(t.speeches), verdicts=verdicts)
        summary.speeches += len(t.speeches)
        summary.quotes += sum(len(s.quotes) for s in t.speeches)
        summary.verdicts += len(verdicts)
    return summary
