"""Admin pages (admin token only): leaderboard, judge accuracy and calibration, inter-annotator
agreement, the judging queue, and full transcripts with the passage, the answer and every verdict.

A run can hold any record kind (full, verdict-only, failed; human and model verdicts); a table that
still fails is logged and named on the page, never shown as a traceback (`ui.page_errors`)."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import streamlit as st

from arenas.metrics import accuracy, calibration_bins
from arenas.report import build_report, plot_accuracy
from debate.records import Verdict
from debate.store import Store
from ui.app import get_queue, get_store, require_user
from ui.page_errors import guarded, shown_or_logged
from ui.view import agreement, judge_label, speech_html, text_html


def _choose_run(store: Store) -> Optional[str]:
    runs = [r.name for r in store.runs()]
    if not runs:
        st.info("No runs in the store yet.")
        return None
    return st.selectbox("Run", runs, index=len(runs) - 1, key="admin_run")


def _choose_judge(verdicts: list[Verdict]) -> Optional[str]:
    judges = sorted({v.judge for v in verdicts})
    if not judges:
        st.info("No verdicts in this run yet.")
        return None
    return st.selectbox("Judge", judges, key="admin_judge")


def _admin_run_page(title: str):
    """The admin check, the page title and the chosen run (None when there is none)."""
    require_user(admin=True)
    st.title(title)
    store = get_store()
    return store, _choose_run(store)


@guarded("the leaderboard page")
def leaderboard_page() -> None:
    """Bradley-Terry ratings with bootstrap intervals for one run and judge."""
    store, run = _admin_run_page("Leaderboard")
    judge = _choose_judge(store.verdicts(run)) if run else None
    if not judge:
        return
    with shown_or_logged(f"the leaderboard of run {run!r} for judge {judge!r}"):
        report = build_report(store, run, judge=judge)
        if not len(report.leaderboard):
            st.info("No decided debates between two named debaters to rate yet (verdict-only records and "
                    "self-play are not rated).")
            return
        st.dataframe(report.leaderboard, hide_index=True)
        st.caption("strength: Bradley-Terry log-strength with bootstrap 95% interval (low, high); Elo for display.")


@guarded("the accuracy page")
def accuracy_page() -> None:
    """Judge accuracy by protocol (with a plot) and by judge, and the calibration of human judges.

    Each part is shown on its own: one that fails is named and the others still appear."""
    store, run = _admin_run_page("Accuracy")
    if not run:
        return
    verdicts = store.verdicts(run)
    judge = _choose_judge(verdicts)
    if not judge:
        return
    st.subheader(f"By protocol (judge {judge}, 95% Wilson intervals)")
    with shown_or_logged(f"the accuracy by protocol of run {run!r} for judge {judge!r}"):
        report = build_report(store, run, judge=judge)
        if len(report.accuracy):
            st.dataframe(report.accuracy, hide_index=True)
        else:
            st.info(f"No verdicts by {judge} in this run.")
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_accuracy(report, Path(tmp) / "accuracy.png")
            if png:
                st.image(png.read_bytes())
    correct = _correct_answers(store, run)
    st.subheader("By judge (human judges by name)")
    with shown_or_logged(f"the accuracy by judge of run {run!r}"):
        st.dataframe(_by_judge(verdicts, correct), hide_index=True)
    st.subheader("Calibration of human judges")
    with shown_or_logged(f"the calibration of human judges in run {run!r}"):
        # decided verdicts only: a failed one has no probability, and neither judge kind stores an exact 50/50
        bins = calibration_bins([v.p_correct(correct[v.transcript_id]) for v in verdicts if v.judge == "human" and v.winner is not None])
        if not bins:
            st.info("No decided human verdicts yet.")
            return
        st.dataframe(pd.DataFrame([b.__dict__ for b in bins]), hide_index=True)
        fig = _reliability_figure(bins)
        st.pyplot(fig)
        import matplotlib.pyplot as plt

        plt.close(fig)  # a long-running server would otherwise keep every figure it drew


def _correct_answers(store: Store, run: str) -> dict[str, int]:
    questions = store.questions(run)
    return {t.id: questions[t.question_id].correct for t in store.transcripts(run)}


def _by_judge(verdicts: list[Verdict], correct: dict[str, int]) -> pd.DataFrame:
    groups: dict[str, list[float]] = {}
    for v in verdicts:
        p = v.p_correct(correct[v.transcript_id])
        if p is not None:
            groups.setdefault(judge_label(v), []).append(p)
    rows = []
    for name, ps in sorted(groups.items()):
        r = accuracy(ps)
        rows.append(dict(judge=name, n=r.n, accuracy=r.value, low=r.low, high=r.high))
    return pd.DataFrame(rows)


def _reliability_figure(bins):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0.5, 1.0], [0.5, 1.0], linestyle="--", color="grey", label="perfect calibration")
    ax.plot([b.confidence for b in bins], [b.accuracy for b in bins], marker="o", label="human judges")
    for b in bins:
        ax.annotate(f"n={b.n}", (b.confidence, b.accuracy), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("final probability of the chosen answer")
    ax.set_ylabel("fraction correct")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


@guarded("the agreement page")
def agreement_page() -> None:
    """Pairwise agreement between human judges who judged the same debate."""
    store, run = _admin_run_page("Agreement")
    if not run:
        return
    human = store.verdicts(run, judge="human")
    a = agreement(human)
    if a.pairs == 0:
        st.info("No debate has two or more human verdicts yet.")
        return
    st.metric("Pairwise agreement", f"{a.rate:.0%}", help=f"95% interval {a.low:.0%} to {a.high:.0%}")
    st.dataframe(pd.DataFrame([a.__dict__]), hide_index=True)
    rows = {}
    for v in human:
        rows.setdefault(v.transcript_id, []).append(f"{judge_label(v)}: {'-' if v.winner is None else 'answer ' + 'AB'[v.winner]}")
    st.dataframe(pd.DataFrame([dict(transcript=k, verdicts=", ".join(x)) for k, x in rows.items() if len(x) > 1]), hide_index=True)


@guarded("the queue page")
def queue_page() -> None:
    """Judging slots per run, and the registered judges (never their tokens)."""
    require_user(admin=True)
    st.title("Queue")
    queue = get_queue()
    table = queue.queue_table()
    if table:
        st.dataframe(pd.DataFrame(table), hide_index=True)
    else:
        st.info("The judging queue is empty.")
    st.subheader("Judges")
    st.dataframe(pd.DataFrame([dict(name=j.name, admin=j.admin, revoked=j.revoked) for j in queue.judges()]), hide_index=True)


@guarded("the transcripts page")
def transcripts_page() -> None:
    """Any transcript of a run, with its passage, correct answer and verdicts."""
    store, run = _admin_run_page("Transcripts")
    if not run:
        return
    transcripts = store.transcripts(run)
    if not transcripts:
        st.info("No transcripts in this run.")
        return
    questions = store.questions(run)
    labels = {t.id: f"{t.protocol} · {questions[t.question_id].question[:60]} · {t.id}" for t in transcripts}
    tid = st.selectbox("Transcript", list(labels), format_func=labels.get, key="admin_transcript")
    t = next(x for x in transcripts if x.id == tid)
    q = questions[t.question_id]
    st.markdown(text_html(q.question), unsafe_allow_html=True)
    for i, ans in enumerate(q.answers):
        mark = " (correct)" if i == q.correct else ""
        st.markdown(text_html(f"{'AB'[i]}: {ans}{mark}"), unsafe_allow_html=True)
    seats = ", ".join(f"{s.role} = {s.entry} for {'AB'[s.side]}" for s in t.seats) or "none (a verdict-only record)"
    st.caption(f"Seats: {seats}; status {t.status}" + (f" ({t.error})" if t.error else ""))
    with st.expander("Passage", expanded=False):
        st.markdown(text_html(q.passage or "(no passage)"), unsafe_allow_html=True)
    for s in t.speeches:
        head = html.escape(f"turn {s.turn + 1} · {s.entry}")
        st.markdown(f"<div><small>{head}</small></div>" + speech_html(s, 0), unsafe_allow_html=True)
    st.subheader("Verdicts")
    rows = [dict(judge=judge_label(v), p_answer0=v.p_answer0, winner=v.winner, beliefs=str(list(v.beliefs)),
                 error=v.error, raw=v.raw[:300]) for v in store.verdicts(run) if v.transcript_id == t.id]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    else:
        st.info("No verdicts yet.")


PAGES: list[tuple[Callable[[], None], str, str]] = [
    (leaderboard_page, "Leaderboard", "leaderboard"),
    (accuracy_page, "Accuracy", "accuracy"),
    (agreement_page, "Agreement", "agreement"),
    (queue_page, "Queue", "queue"),
    (transcripts_page, "Transcripts", "transcripts"),
]
