"""The first-to-last change of a training run's held-out rates paired by question: every iteration evaluates
the same held-out questions, so each question's share at the last iteration is compared with its own share at
the first, and question difficulty (some passages the policy always quotes right, some never) drops out of the
difference. A Student t interval over the questions' differences (the question is the unit: its two seatings
share a passage and are not independent)."""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping, NamedTuple, Sequence

from debate.intervals import mean_interval, wilson_interval
from debate.records import Question, Transcript, Verdict
from debate.store import Store
from debate.training.quote_stats import supporting_by_speech
from arenas.selfplay_games import HELDOUT_JUDGE, TRAIN_JUDGE

Outcomes = Mapping[str, Sequence[float]]  # question id -> the 0/1 outcomes of its games (or speeches)
PAIRED = [("judge acc", TRAIN_JUDGE), ("held-out judge", HELDOUT_JUDGE), ("honest quotes", None)]


def paired_change(first: Outcomes, last: Outcomes) -> tuple[float, float, float, int]:
    """(mean difference, low, high, questions) of the per-question shares last - first, over the questions
    measured at both."""
    both = sorted(q for q in first if first[q] and last.get(q))
    diffs = [sum(last[q]) / len(last[q]) - sum(first[q]) / len(first[q]) for q in both]
    return (*mean_interval(diffs), len(both))


def judge_outcomes(games: Sequence[Transcript], by_judge: Mapping[tuple[str, str], Verdict],
                   questions: Mapping[str, Question], judge: str) -> dict[str, list[float]]:
    """Per question, whether `judge`'s verdict on each game was right (failed verdicts left out, as in the
    iteration's rates); `by_judge` maps (judge, transcript id) to the verdict."""
    out: dict[str, list[float]] = defaultdict(list)
    for t in games:
        q, v = questions.get(t.question_id), by_judge.get((judge, t.id))
        if q is not None and v is not None and v.p_answer0 is not None:
            out[q.id].append(float((v.p_correct(q.correct) or 0) > 0.5))
    return out


def iteration_outcomes(games: Sequence[Transcript], verdicts: Sequence[Verdict],
                       questions: Mapping[str, Question]) -> dict[str, dict[str, list[float]]]:
    """Per metric of `PAIRED`, per question, the outcomes of an iteration's held-out self-play games: a judge's
    verdict right or an honest speech holding the deciding fact."""
    by_judge = {(v.judge, v.transcript_id): v for v in verdicts}
    out = {name: judge_outcomes(games, by_judge, questions, judge) for name, judge in PAIRED if judge is not None}
    out["honest quotes"] = honest_outcomes(games, questions)
    return out


def honest_outcomes(games: Sequence[Transcript], questions: Mapping[str, Question]) -> dict[str, list[float]]:
    """Per question, whether each honest speech holds the deciding fact (synthetic questions, as the rates count)."""
    supporting = supporting_by_speech(games, questions)
    honest: dict[str, list[float]] = defaultdict(list)
    for t in games:
        if t.question_id in questions:
            honest[t.question_id] += [float(supporting[f"{t.id}:{s.index}"]) for s in t.speeches
                                      if f"{t.id}:{s.index}" in supporting]
    return honest


class RunRecords(NamedTuple):
    """What the report's paired lines read from a run, loaded once for all of them."""

    transcripts: Sequence[Transcript]
    verdicts: Sequence[Verdict]
    questions: Mapping[str, Question]


def run_records(store: Store, run: str) -> RunRecords:
    return RunRecords(store.transcripts(run), store.verdicts(run), store.questions(run))


def tagged(games: Sequence[Transcript], tag: str) -> list[Transcript]:
    return [t for t in games if tag in t.tags]


def iterations_of(games: Sequence[Transcript]) -> list[int]:
    return sorted({int(x.split("-")[1]) for t in games for x in t.tags if x.startswith("iteration-")})


def paired_change_line(records: RunRecords, first: int, last: int) -> str:
    """The report's line: each rate's change from iteration `first` to `last`, paired by question."""
    games = tagged(records.transcripts, "self")
    at = {it: iteration_outcomes(tagged(games, f"iteration-{it}"), records.verdicts, records.questions)
          for it in (first, last)}
    parts = []
    for name, _ in PAIRED:
        d, lo, hi, n = paired_change(at[first][name], at[last][name])
        if n >= 2:
            parts.append(f"{name} {d:+.2f} [{lo:+.2f}, {hi:+.2f}]")
    n_q = len({t.question_id for t in games})
    return (f"the same change paired by question (Student t over the {n_q} held-out questions' differences): "
            + ("; ".join(parts) or "fewer than two questions measured in both"))


def rollout_change_line(records: RunRecords) -> str | None:
    """The training rollouts' honest supporting-quote rate from the first rollouts to the last, paired by training
    question. The rollouts' Wilson intervals count speeches as independent, but a question's samples share its
    passage (4 speeches of 12 passages are not 48 draws), so only this interval says whether the rise on the
    training passages is more than their luck. None when fewer than two iterations have rollouts."""
    games = tagged(records.transcripts, "rollout")
    its = iterations_of(games)
    if len(its) < 2:
        return None
    first, last = (honest_outcomes(tagged(games, f"iteration-{it}"), records.questions) for it in (its[0], its[-1]))
    d, lo, hi, n = paired_change(first, last)
    head = f"training rollouts' honest quotes, iteration {its[0]} -> {its[-1]}"
    if n < 2:
        return f"{head}: fewer than two training questions in both (fresh_questions gives each iteration its own), so no paired change"
    return f"{head}, paired by training question (Student t over {n}): {d:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def rejudged_lines(records: RunRecords) -> list[str]:
    """For every judge other than the run's two that has judged its held-out games afterwards (`debate judge RUN
    --judge SPEC --tag self`): its accuracy at each iteration (Wilson) and its first-to-last change paired by
    question."""
    games = tagged(records.transcripts, "self")
    ids = {t.id for t in games}
    by_judge = {(v.judge, v.transcript_id): v for v in records.verdicts if v.transcript_id in ids}
    lines = []
    for judge in sorted({j for j, _ in by_judge} - {TRAIN_JUDGE, HELDOUT_JUDGE}):
        per = {it: judge_outcomes(tagged(games, f"iteration-{it}"), by_judge, records.questions, judge)
               for it in iterations_of(games)}
        per = {it: o for it, o in per.items() if o}
        if not per:
            continue
        cells = []
        for it, outcomes in per.items():
            k, n = sum(sum(o) for o in outcomes.values()), sum(len(o) for o in outcomes.values())
            lo, hi = wilson_interval(k, n)
            cells.append(f"{it}: {k / n:.2f} [{lo:.2f}, {hi:.2f}]")
        first, last = min(per), max(per)
        d, lo, hi, n_q = paired_change(per[first], per[last])
        change = (f"; change {first} -> {last} paired by question {d:+.2f} [{lo:+.2f}, {hi:+.2f}]"
                  if last > first and n_q >= 2 else "")
        lines.append(f"judge {judge} on the held-out games (judged after the run): " + ", ".join(cells) + change)
    return lines
