"""Tournaments end to end on the tiny random Llama: in-process, through Ray actors, report and export."""

from __future__ import annotations

import pandas as pd
import pytest

from arenas.report import build_report, format_report, plot_accuracy
from arenas.tournament import run_tournament
from debate.configs import load_tournament
from debate.export import export_run
from tests.conftest import tiny_config

# transcripts for 2 entries and n questions: debate 2n, simultaneous 2n, consultancy 4n, blind n, expert n
EXPECTED = {"debate": 2, "simultaneous": 2, "consultancy": 4, "blind": 1, "expert": 1}
SPEECHES = {"debate": 4, "simultaneous": 2, "consultancy": 1, "blind": 0, "expert": 0}
# 95% Wilson intervals (low, high) of k right out of n, from published tables
WILSON = {2: [(0.0, 0.6576), (0.0945, 0.9055), (0.3424, 1.0)],
          4: [(0.0, 0.4899), (0.0456, 0.6994), (0.15, 0.85), (0.3006, 0.9544), (0.5101, 1.0)],
          8: [(0.0, 0.3244), (0.0224, 0.4709), (0.0715, 0.5907), (0.1368, 0.6943), (0.2152, 0.7848),
              (0.3057, 0.8632), (0.4093, 0.9285), (0.5291, 0.9776), (0.6756, 1.0)]}


@pytest.fixture(scope="module")
def local_run(tiny_model_dir, tiny_policy, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    cfg = load_tournament(tiny_config(tiny_model_dir, results, n=2))
    result = run_tournament(cfg, run="t1", progress=False, policies={"p": tiny_policy, "j": tiny_policy})
    return cfg, result


def test_every_planned_debate_is_played_stored_and_judged(local_run):
    cfg, result = local_run
    ts = result.store.transcripts("t1")
    by_proto = pd.Series([t.protocol for t in ts]).value_counts().to_dict()
    assert by_proto == {k: v * 2 for k, v in EXPECTED.items()}
    assert all(t.status == "complete" for t in ts)
    for t in ts:
        assert len(t.speeches) == SPEECHES[t.protocol]
        assert [s.index for s in t.speeches] == list(range(len(t.speeches)))
    verdicts = result.store.verdicts("t1")
    assert {v.transcript_id for v in verdicts} == {t.id for t in ts}
    for v in verdicts:
        assert (v.winner is None) == (v.p_answer0 is None)
        if v.p_answer0 is not None:
            assert 0 < v.p_answer0 < 1 and len(v.p_orders) == 2


def test_seats_cover_both_sides_of_each_question(local_run):
    _, result = local_run
    debates = [t for t in result.store.transcripts("t1") if t.protocol == "debate"]
    for q in {t.question_id for t in debates}:
        here = [t for t in debates if t.question_id == q]
        assert sorted(t.seat("debater_a").entry for t in here) == ["cold", "hot"]  # each entry speaks first once
        for entry in ("cold", "hot"):  # and defends each answer once
            assert sorted(s.side for t in here for s in t.seats if s.entry == entry) == [0, 1]


def test_the_first_speaker_defends_each_answer_in_turn_whatever_the_correct_answers():
    """Every correct answer is answer 0 here: were the first speaker always on answer 0, the honest side
    would always speak first. Alternating by question, it speaks first in exactly half the debates."""
    from arenas.schedule import round_robin
    from debate.protocols import get_protocol
    from debate.records import Question

    qs = [Question(f"q{i}", "Which?", ("left", "right"), 0) for i in range(6)]
    ts = round_robin("r", ["x", "y", "z"], qs, [get_protocol("debate", rounds=2)], samples=2)
    assert len(ts) == 6 * 2 * 3 * 2 and len({t.id for t in ts}) == len(ts)
    honest_first = [t.seats[0].side == 0 for t in ts]
    assert sum(honest_first) == len(ts) // 2
    for i, q in enumerate(qs):
        for k in range(2):
            firsts = {t.seats[0].side for t in ts if t.question_id == q.id and t.sample == k}
            assert firsts == {(i + k) % 2}  # one side per question and sample, alternating
    for entry in ("x", "y", "z"):  # each entry speaks first on each answer equally often
        mine = [t.seats[0].side for t in ts if t.seats[0].entry == entry]
        assert mine.count(0) == mine.count(1)


def test_a_resumed_run_keeps_the_plan_it_was_made_with(tiny_model_dir, tmp_path, monkeypatch):
    """A run planned by an older schedule (every first speaker on answer 0) gains no debates when it is
    prepared again by today's: resuming never doubles a run."""
    from dataclasses import replace

    import arenas.tournament as tournament
    from arenas.schedule import round_robin
    from debate.records import Seat
    from debate.store import Store

    cfg = load_tournament(tiny_config(tiny_model_dir, tmp_path, n=4, protocols=[{"name": "debate", "rounds": 1}]))

    def old_schedule(*args, **kwargs):
        out = []
        for t in round_robin(*args, **kwargs):
            seats = tuple(Seat(s.role, s.entry, i) for i, s in enumerate(t.seats))
            out.append(replace(t, seats=seats, id=t.id + "-old"))
        return out

    store = Store(tmp_path)
    monkeypatch.setattr(tournament, "round_robin", old_schedule)
    old, _ = tournament.prepare_run(cfg, "old", store)
    monkeypatch.undo()
    again, _ = tournament.prepare_run(cfg, "old", store)
    assert store.count("transcripts", "old") == len(old) == 4 * 2
    assert {t.id for t in again} == {t.id for t in old}
    assert all(t.seats[0].side == 0 for t in store.transcripts("old"))
    fresh, _ = tournament.prepare_run(cfg, "new", store)
    assert sorted(t.seats[0].side for t in fresh) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_resume_of_a_finished_run_writes_nothing(local_run, tiny_policy):
    cfg, result = local_run
    store = result.store
    before = [store.count(t, "t1") for t in ("transcripts", "verdicts", "questions")]
    again = run_tournament(cfg, run="t1", resume=True, progress=False, policies={"p": tiny_policy, "j": tiny_policy})
    assert (again.played, again.judged) == (0, 0)
    assert [store.count(t, "t1") for t in ("transcripts", "verdicts", "questions")] == before


def test_report_tables_and_plot(local_run, tmp_path):
    _, result = local_run
    report = build_report(result.store, "t1")
    assert set(report.accuracy.protocol) == set(EXPECTED)
    n_by = dict(zip(report.accuracy.protocol, report.accuracy.n + report.accuracy.failed))
    assert n_by == {k: v * 2 for k, v in EXPECTED.items()}
    # accuracy and its interval from the stored verdicts, counted here
    questions = result.store.questions("t1")
    protocol_of = {t.id: (t.protocol, questions[t.question_id].correct) for t in result.store.transcripts("t1")}
    right: dict[str, list[bool]] = {}
    for v in result.store.verdicts("t1"):
        protocol, correct = protocol_of[v.transcript_id]
        if v.winner is not None:
            right.setdefault(protocol, []).append(v.winner == correct)
    assert right, "no decided verdict to check"
    for row in report.accuracy.itertuples():
        k, n = sum(right.get(row.protocol, [])), len(right.get(row.protocol, []))
        assert (row.n, row.accuracy) == (n, pytest.approx(k / n)), row
        assert (row.low, row.high) == pytest.approx(WILSON[n][k], abs=1e-3), row
    overall = report.leaderboard[report.leaderboard.scope == "overall"]
    assert set(overall.player) == {"cold", "hot"}
    assert abs(overall.strength.sum()) < 1e-6  # mean-centred strengths
    text = format_report(report)
    assert "judge accuracy by protocol" in text and "leaderboard" in text
    png = plot_accuracy(report, tmp_path / "acc.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_verb_writes_only_its_plot(local_run, capsys):
    import sqlite3

    from ui.cli import main

    cfg, result = local_run
    folder = result.store.folder

    def state() -> tuple[set, set]:
        with sqlite3.connect(result.store.path) as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return tables, {p.relative_to(folder) for p in folder.rglob("*") if p.name != "accuracy.png"}

    before = state()
    assert main(["report", "t1", "--results", str(folder)]) == 0
    assert "judge accuracy by protocol" in capsys.readouterr().out
    assert state() == before and "slots" not in before[0]  # no human-queue tables, no new folder or file
    assert (folder / "t1" / "accuracy.png").exists()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_export_for_pandas(local_run, tmp_path, fmt):
    _, result = local_run
    paths = {p.stem: p for p in export_run(result.store, "t1", tmp_path, fmt)}
    read = pd.read_parquet if fmt == "parquet" else (lambda p: pd.read_json(p, lines=True))
    speeches = read(paths["speeches"])
    verdicts = read(paths["verdicts"])
    transcripts = read(paths["transcripts"])
    assert {"transcript_id", "index", "role", "side", "entry", "text", "judge_text", "n_quotes", "empty"} <= set(speeches.columns)
    assert {"setting", "tags", "quote_mode"} <= set(transcripts.columns)
    assert set(transcripts.setting) == {""} and set(transcripts.tags) == {"[]"}  # a tournament's: no import setting or tags
    assert {"p_answer0", "p_orders", "winner", "raw", "error", "judge"} <= set(verdicts.columns)
    assert len(transcripts) == result.store.count("transcripts", "t1")
    assert len(speeches) == sum(len(t.speeches) for t in result.store.transcripts("t1"))
    merged = verdicts.merge(transcripts, left_on="transcript_id", right_on="id")
    assert len(merged) == len(verdicts)


def test_tournament_through_ray_actors(tiny_model_dir, tmp_path):
    ray = pytest.importorskip("ray")
    cfg = load_tournament(tiny_config(tiny_model_dir, tmp_path, n=1, protocols=[{"name": "debate", "rounds": 1}, {"name": "blind"}]))
    try:
        result = run_tournament(cfg, run="ray1", progress=False)
        ts = result.store.transcripts("ray1")
        assert len(ts) == 3 and all(t.status == "complete" for t in ts)
        assert len(result.store.verdicts("ray1")) == 3
        assert ray.is_initialized()
    finally:
        ray.shutdown()


def test_tournament_with_human_judges_queues_its_debates(tiny_model_dir, tiny_policy, tmp_path):
    from judges.human_queue import HumanQueue

    data = tiny_config(tiny_model_dir, tmp_path, n=1, protocols=[{"name": "debate", "rounds": 1}, {"name": "blind"}])
    data["judge"] = {"name": "human", "kind": "human", "judges_per_debate": 2}
    cfg = load_tournament(data)
    result = run_tournament(cfg, run="h1", progress=False, policies={"p": tiny_policy})
    assert result.judged == 0
    queue = HumanQueue(result.store)
    assert queue.queue_table("h1") == [{"run": "h1", "open": 6, "in_progress": 0, "expired": 0, "done": 0}]
    for name in ("ann", "bob"):
        queue.add_judge(name)
        while (slot := queue.take(name)) is not None:
            queue.submit(slot.id, name, slot.lease, 0.3, "the quotes favour the second answer")
    # one story here, so each judge may judge only one of its three debates
    assert queue.queue_table("h1")[0]["done"] == 2
    report = build_report(result.store, "h1")
    assert report.judge == "human" and report.accuracy.n.sum() == 2
