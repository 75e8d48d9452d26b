"""Reports over every record kind the store holds: full, verdict-only, failed, self-play, human and model verdicts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from arenas.report import build_report, format_report, plot_accuracy
from arenas.settings_report import format_settings, judged_frame, setting_table
from debate.records import Question, RunInfo, Seat, Speech, Transcript, Verdict
from debate.store import Store

RUN = "mixed"


def _human(vid: str, t: Transcript, p: float, name: str) -> Verdict:
    return Verdict(vid, RUN, t.id, t.question_id, "human", p, winner=0 if p > 0.5 else 1, raw=f'{{"judge_name": "{name}"}}')


def mixed_store(folder: Path) -> Store:
    """One run holding each kind of record: full debates and consultancies, verdict-only rooms (no seats,
    no speeches), a failed debate with a failed verdict, a self-play debate, several human verdicts on one
    debate, and model verdicts. Every question's correct answer is 0."""
    store = Store(folder)
    store.add_run(RunInfo(RUN, "tournament", "", time.time()))  # no configured judge
    debate_seats = (Seat("debater_a", "alpha", 0), Seat("debater_b", "beta", 1))
    ts = [
        Transcript("t-debate", RUN, "m", "q0", "debate", debate_seats, status="complete", setting="human debate"),
        Transcript("t-self", RUN, "m", "q1", "debate", (Seat("debater_a", "gpt", 0), Seat("debater_b", "gpt", 1)),
                   status="complete", setting="GPT-4 debate"),
        Transcript("t-cons", RUN, "m", "q2", "consultancy", (Seat("consultant", "alpha", 1),), status="complete",
                   setting="human consultancy"),
        Transcript("t-vo-cons", RUN, "nyu", "q3", "consultancy", (), status="complete", setting="human consultancy",
                   tags=("verdict_only",)),
        Transcript("t-vo-debate", RUN, "nyu", "q4", "debate", (), status="complete", setting="human debate",
                   tags=("verdict_only",)),
        Transcript("t-failed", RUN, "m", "q5", "debate", debate_seats, status="failed", error="model call failed"),
    ]
    qs = [Question(f"q{i}", f"Question {i}?", (f"yes {i}", f"no {i}"), 0, passage=f"Story {i}.") for i in range(6)]
    sp = [Speech("t-debate", i, 0, ("debater_a", "debater_b")[i], i, ("alpha", "beta")[i], "text") for i in range(2)]
    sp.append(Speech("t-cons", 0, 0, "consultant", 1, "alpha", "text"))
    by_id = {t.id: t for t in ts}
    vs = [
        _human("h1", by_id["t-debate"], 0.8, "ann"), _human("h2", by_id["t-debate"], 0.3, "bob"),  # two people, one debate
        _human("h3", by_id["t-self"], 0.9, "ann"), _human("h4", by_id["t-cons"], 0.2, "ann"),
        _human("h5", by_id["t-vo-cons"], 0.7, "cat"), _human("h6", by_id["t-vo-debate"], 0.6, "cat"),
        Verdict("m1", RUN, "t-debate", "q0", "judge", 0.9, p_orders=(0.8, 1.0), winner=0),
        Verdict("m2", RUN, "t-self", "q1", "judge", 0.4, p_orders=(0.3, 0.5), winner=1),
        Verdict("m3", RUN, "t-cons", "q2", "judge", 0.6, p_orders=(0.6, 0.6), winner=0),
        Verdict("m4", RUN, "t-failed", "q5", "judge", None, error="unparseable", raw="???"),
    ]
    store.write_all(RUN, questions=qs, transcripts=ts, speeches=sp, verdicts=vs)
    return store


@pytest.fixture
def store(tmp_path) -> Store:
    return mixed_store(tmp_path / "results")


@pytest.mark.parametrize("judge", ["human", "judge", None])
def test_build_report_handles_every_record_kind(store, judge, tmp_path):
    report = build_report(store, RUN, judge=judge)
    assert report.judge == (judge or "judge")  # no configured judge: the default name
    text = format_report(report)
    assert f"run {RUN}" in text
    assert plot_accuracy(report, tmp_path / "acc.png").exists()
    acc = report.accuracy.set_index("protocol")
    if judge == "human":
        # every human verdict counts, verdict-only ones included: debate 0.8, 0.3, 0.9, 0.6; consultancy 0.2, 0.7
        assert acc.loc["debate", "n"] == 4 and acc.loc["debate", "accuracy"] == pytest.approx(0.75)
        assert acc.loc["consultancy", "n"] == 2
        # the consultancy table only knows the consultant of the full room (side 1, dishonest; 0.2 on answer 0 took it)
        assert report.consultancy.to_dict("records") == [dict(entry="alpha", honest=False, n=1, judge_took_answer=1.0)]
    else:
        assert acc.loc["debate", "failed"] == 1 and acc.loc["debate", "n"] == 2
    # rated games: only the full debate between two different entries (self-play and verdict-only are left out)
    overall = report.leaderboard[report.leaderboard.scope == "overall"]
    assert set(overall.player) == {"alpha", "beta"}
    assert overall.games.tolist() == [2 if judge == "human" else 1] * 2


def test_a_run_with_only_failed_verdicts_and_an_empty_run(tmp_path):
    store = Store(tmp_path)
    store.add_run(RunInfo("failed", "tournament", "judge: {name: j}", time.time()))
    store.add_run(RunInfo("empty", "tournament", "judge: {name: j}", time.time()))
    t = Transcript("t", "failed", "m", "q", "debate", (Seat("debater_a", "a", 0), Seat("debater_b", "b", 1)), status="failed",
                   error="boom")
    store.write_all("failed", questions=[Question("q", "Q?", ("x", "y"), 1)], transcripts=[t],
                    verdicts=[Verdict("v", "failed", "t", "q", "j", None, error="unparseable")])
    report = build_report(store, "failed")
    assert report.accuracy.failed.tolist() == [1] and report.accuracy.n.tolist() == [0]
    assert not len(report.leaderboard) and not len(report.consultancy)
    assert plot_accuracy(report, tmp_path / "failed.png").exists()
    assert "failed" in format_report(report)
    empty = build_report(store, "empty")
    assert not len(empty.accuracy) and not len(empty.leaderboard) and plot_accuracy(empty, tmp_path / "e.png") is None
    assert "(none)" in format_report(empty)
    assert format_settings(store, "empty") == "run empty: no verdicts"
    assert "j" in format_settings(store, "failed", paper_only=False)


def test_agreement_with_several_human_verdicts_on_one_debate(store):
    table = setting_table(judged_frame(store, RUN), paper_only=False).set_index(["setting", "judge"])
    # the model's verdict on t-debate (answer 0) against ann (0) and bob (1): one pair of two agrees
    row = table.loc[("human debate", "judge")]
    assert row.shared == 2 and row.agree_with_human == pytest.approx(0.5)
    assert table.loc[("human consultancy", "human"), "n"] == 2
    assert "human debate" in format_settings(store, RUN, paper_only=False)


def test_side_table_counts_the_first_speaker_by_its_seat_not_by_answer_0():
    """A judge that always picks the first speaker: the first speaker wins every debate, and the honest
    side wins exactly when it speaks first, whichever answer is correct."""
    import pandas as pd

    from arenas.report import side_table

    rows = [dict(protocol="debate", failed=False, correct=correct, first_side=first, winner=first)
            for correct in (0, 1) for first in (0, 1, 1)]
    t = side_table(pd.DataFrame(rows)).iloc[0]
    assert (t.n, t.first_speaker_win, t.n_honest_first) == (6, 1.0, 3)
    assert (t.honest_win_first, t.honest_win_second) == (1.0, 0.0)
    assert t.honest_win == pytest.approx(3 / 6)
