"""Export a run's records as flat tables (Parquet or JSONL) for pandas; columns in results/README.md."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from debate.records import to_dict
from debate.store import Store

FORMATS = ("parquet", "jsonl")


def tables(store: Store, run: str) -> dict[str, pd.DataFrame]:
    """questions, transcripts, speeches, quotes and verdicts of a run, one row per record."""
    questions = [dict(run=run, **{k: v for k, v in to_dict(q).items() if k != "answers"},
                      answer_0=q.answers[0], answer_1=q.answers[1]) for q in store.questions(run).values()]
    transcripts, speeches, quotes = [], [], []
    for t in store.transcripts(run):
        seats = {s.role: s for s in t.seats}
        transcripts.append(dict(
            id=t.id, run=t.run, match=t.match, question_id=t.question_id, protocol=t.protocol, sample=t.sample,
            status=t.status, error=t.error, warnings=json.dumps(list(t.warnings)), quote_mode=t.quote_mode,
            setting=t.setting, tags=json.dumps(list(t.tags)),
            seats=json.dumps([to_dict(s) for s in t.seats]), n_speeches=len(t.speeches),
            entry_a=(seats.get("debater_a") or seats.get("consultant")).entry if t.seats else None,
            entry_b=seats["debater_b"].entry if "debater_b" in seats else None,
            schema_version=t.schema_version,
        ))
        for s in t.speeches:
            speeches.append(dict(
                transcript_id=s.transcript_id, index=s.index, turn=s.turn, role=s.role, side=s.side, entry=s.entry,
                text=s.text, judge_text=s.judge_text, words=s.n_words, tokens=s.n_tokens, n_quotes=len(s.quotes),
                n_verified=sum(q.verified for q in s.quotes), empty=s.empty, truncated=s.truncated,
                schema_version=s.schema_version,
            ))
            for k, q in enumerate(s.quotes):
                quotes.append(dict(transcript_id=s.transcript_id, speech_index=s.index, quote_index=k, **to_dict(q)))
    verdicts = []
    for v in store.verdicts(run):
        d = to_dict(v)
        d["p_orders"] = json.dumps(d["p_orders"])
        d["beliefs"] = json.dumps(d["beliefs"])
        verdicts.append(d)
    out = {
        "questions": pd.DataFrame(questions),
        "transcripts": pd.DataFrame(transcripts),
        "speeches": pd.DataFrame(speeches),
        "quotes": pd.DataFrame(quotes),
        "verdicts": pd.DataFrame(verdicts),
    }
    failed_transcripts, failed_verdicts = store.failures(run)
    if failed_transcripts or failed_verdicts:  # retried failures (`--retry-failed`), one row per failed attempt
        out["transcript_failures"] = pd.DataFrame([{"run": run, **r} for r in failed_transcripts])
        out["verdict_failures"] = pd.DataFrame([{"run": run, **r} for r in failed_verdicts])
    placements = store.placements(run)
    if placements:  # where each policy's actor ran, one row per policy per call of the run
        out["placements"] = pd.DataFrame([{"run": run, **p} for p in placements])
    from debate.training.iterations import iteration_rows, run_stages

    rows = iteration_rows(store, run)
    if rows:  # a training run: one row per iteration, every metric a column
        out["iterations"] = pd.DataFrame([{"run": run, **r} for r in rows])
    stages = run_stages(store, run)
    if stages:  # what a training run started from, one row, nested keys joined by dots
        out["stages"] = pd.json_normalize({"run": run, **stages}, sep=".")
    return out


def export_run(store: Store, run: str, out: Path, fmt: str = "parquet") -> list[Path]:
    """Write each table of the run to `out/<table>.<fmt>`; returns the paths written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    store.run(run)  # a clear error when the run does not exist
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in tables(store, run).items():
        path = out / f"{name}.{fmt}"
        if fmt == "parquet":
            df.to_parquet(path, index=False)
        else:
            df.to_json(path, orient="records", lines=True, force_ascii=False)
        paths.append(path)
    return paths
