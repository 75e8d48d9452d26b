"""NYU human debates: import, the paper's table, known beliefs and quotes, idempotence, bad input, re-judging."""

from __future__ import annotations

import json
import shutil

import pytest

from arenas.settings_report import judged_frame, setting_table
from debate.nyu import import_nyu
from debate.store import Store
from tests.conftest import NYU_DIR

pytestmark = pytest.mark.skipif(not NYU_DIR.exists(), reason=f"NYU debates not present at {NYU_DIR}")

PAPER = {  # the dataset README's table: setting -> (n, accuracy)
    "human debate": (154, 0.844),
    "human consultancy": (96, 0.740),
    "GPT-4 debate": (87, 0.782),
    "GPT-4 consultancy": (76, 0.803),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("nyu"))
    summary = import_nyu(NYU_DIR, store)
    return store, summary


def test_import_summary_covers_every_metadata_row(imported):
    store, summary = imported
    rows = sum(1 for line in (NYU_DIR / "debates-metadata.jsonl").read_text().splitlines() if line.strip())
    assert summary.full + summary.verdict_only + sum(
        n for reason, n in summary.skipped.items() if not reason.startswith("debate file skipped")) == rows
    assert summary.skipped["room not complete (InProgress)"] == 41
    assert summary.skipped["room not complete (WaitingToBegin)"] == 29
    assert store.count("transcripts", "nyu") == summary.full + summary.verdict_only
    assert summary.full > 300 and summary.verdict_only > 150


def test_the_papers_table_from_the_imported_records(imported):
    store, _ = imported
    table = setting_table(judged_frame(store, "nyu"), paper_only=True)
    human = table[table.judge == "human"].set_index("setting")
    for setting, (n, acc) in PAPER.items():
        assert human.loc[setting, "n"] == n, setting
        assert round(human.loc[setting, "accuracy"], 3) == acc, setting
        assert human.loc[setting, "low"] < acc < human.loc[setting, "high"]


def test_turn_by_turn_beliefs_of_a_known_room(imported):
    store, _ = imported
    t = next(t for t in store.transcripts("nyu") if t.question_id == "a-pail-of-air-0")
    assert t.setting == "human debate" and "included_in_paper" in t.tags
    live = next(v for v in store.verdicts("nyu", judge="human") if v.transcript_id == t.id)
    assert live.beliefs == pytest.approx((0.29, 0.36))  # beliefs after each turn before the last
    assert live.p_answer0 == pytest.approx(0.01) and live.winner == 1
    assert json.loads(live.raw)["judge_name"] == "Osmanth Oatcake"
    offline = [v for v in store.verdicts("nyu", judge="human-offline") if v.transcript_id == t.id]
    assert len(offline) == 1 and offline[0].beliefs == pytest.approx((0.5, 0.25))
    assert [s.role for s in t.speeches[:2]] and {s.turn for s in t.speeches} == {0, 1}


def test_export_keeps_setting_and_tags(imported, tmp_path):
    import pandas as pd

    from debate.export import export_run

    store, _ = imported
    paths = {p.stem: p for p in export_run(store, "nyu", tmp_path, "jsonl")}
    exported = pd.read_json(paths["transcripts"], lines=True, dtype={"tags": str}).set_index("id")
    for t in store.transcripts("nyu"):
        assert exported.loc[t.id, "setting"] == t.setting and json.loads(exported.loc[t.id, "tags"]) == list(t.tags)
    assert "human debate" in set(exported.setting)


def test_quote_text_of_a_known_span(imported):
    store, _ = imported
    t = next(t for t in store.transcripts("nyu") if t.question_id == "a-pail-of-air-0")
    quotes = [q.text for s in t.speeches for q in s.quotes]
    expected = ("the carbon dioxide -- when you're shoveling for water, you have to make sure you don't go too high "
                "and get any of that stuff mixed in, for it would put you to sleep, maybe for good, and make the fire go out.")
    assert expected in quotes
    story = store.questions("nyu")["a-pail-of-air-0"].passage
    assert expected in story
    assert all(q.verified for s in t.speeches for q in s.quotes)
    assert any(f"<v_quote>{expected}</v_quote>" in s.judge_text for s in t.speeches)


@pytest.mark.parametrize("judge", ["human", "human-offline", None])
def test_run_reports_on_the_imported_run(imported, judge, tmp_path):
    """Verdict-only consultancies have no seats and GPT-4 debates itself: every table still builds."""
    from arenas.report import build_report, format_report, plot_accuracy

    store, summary = imported
    report = build_report(store, "nyu", judge=judge)
    assert "== leaderboard" in format_report(report)
    if judge is None:  # an import configures no judge: the default name, with no verdicts of its own
        assert report.judge == "judge" and not len(report.accuracy) and plot_accuracy(report, tmp_path / "a.png") is None
        return
    assert plot_accuracy(report, tmp_path / "a.png") is not None
    assert report.accuracy.n.sum() + report.accuracy.failed.sum() == len(store.verdicts("nyu", judge=judge))
    if judge == "human":  # the live judges, verdict-only rooms included; the debaters (people) are rated
        assert set(report.accuracy.protocol) == {"debate", "consultancy"}
        assert report.accuracy.n.sum() > summary.full and len(report.leaderboard) and len(report.consultancy)


def test_reimport_writes_nothing_twice(imported):
    store, summary = imported
    before = [store.count(t, "nyu") for t in ("transcripts", "verdicts", "questions")]
    again = import_nyu(NYU_DIR, store)
    assert (again.full, again.verdict_only) == (summary.full, summary.verdict_only)
    assert [store.count(t, "nyu") for t in ("transcripts", "verdicts", "questions")] == before


def test_bad_files_are_skipped_with_reasons_and_nothing_half_written(tmp_path):
    src = tmp_path / "nyu"
    (src / "debates").mkdir(parents=True)
    meta = [json.loads(line) for line in (NYU_DIR / "debates-metadata.jsonl").read_text().splitlines()]
    good = next(m for m in meta if m["name"] == "a-pail-of-air-0")
    broken_span = dict(good, name="broken-span")
    unknown_round = dict(good, name="unknown-round")
    not_nyu = dict(good, name="not-nyu")
    running = next(m for m in meta if "InProgress" in m["status"])
    lines = [json.dumps(m) for m in (good, broken_span, unknown_round, not_nyu, running)] + ["{not json"]
    (src / "debates-metadata.jsonl").write_text("\n".join(lines) + "\n")
    room = json.loads((NYU_DIR / "debates" / "a-pail-of-air-0.json").read_text())
    shutil.copy(NYU_DIR / "debates" / "a-pail-of-air-0.json", src / "debates")
    bad = json.loads(json.dumps(room))
    bad["rounds"][1]["SimultaneousSpeeches"]["speeches"]["0"]["content"].append({"Quote": {"span": [10**7, 10**7 + 3]}})
    (src / "debates" / "broken-span.json").write_text(json.dumps(bad))
    odd = json.loads(json.dumps(room))
    odd["rounds"].append({"MysteryRound": {}})
    (src / "debates" / "unknown-round.json").write_text(json.dumps(odd))
    (src / "debates" / "not-nyu.json").write_text(json.dumps({"hello": "world"}))

    store = Store(tmp_path / "store")
    summary = import_nyu(src, store)
    assert summary.full == 1
    assert summary.verdict_only == 3  # the metadata verdicts of the three unusable files still count
    reasons = " | ".join(summary.skipped)
    assert "quote span out of the story's range" in reasons
    assert "unknown round type MysteryRound" in reasons
    assert "not an NYU debate file" in reasons
    assert "room not complete (InProgress)" in reasons and "metadata line is not JSON (line 6)" in reasons
    by_room = {t.question_id: t for t in store.transcripts("nyu")}
    assert by_room["broken-span"].speeches == () and "verdict_only" in by_room["broken-span"].tags


def test_rejudge_with_a_model_judge_writes_rows_beside_the_humans(imported, tiny_policy):
    from arenas.rejudge import rejudge

    store, _ = imported
    before = store.count("verdicts", "nyu")
    n = rejudge(store, "nyu", "embedded", limit=3, progress=False, policy=tiny_policy)
    assert n == 3
    assert store.count("verdicts", "nyu") == before + 3
    again = rejudge(store, "nyu", "embedded", limit=3, progress=False, policy=tiny_policy)
    assert again == 3 and store.count("verdicts", "nyu") == before + 6  # the next three, none twice
    table = setting_table(judged_frame(store, "nyu"), paper_only=False)
    model = table[table.judge == "smollm-letters"]
    assert model.n.sum() + model.failed.sum() == 6
    assert model.shared.sum() >= 1 and model.agree_with_human.between(0, 1).all()
