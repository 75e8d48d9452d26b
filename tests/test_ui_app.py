"""The judging app headless (streamlit AppTest) and the pure view logic behind it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from judges.human_queue import HumanQueue
from debate.records import Question, RunInfo, Seat, Speech, Transcript, Verdict
from debate.store import Store
from tests.conftest import NYU_DIR
from ui import view

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
RUN = "ui-run"
PASSAGE = "ZEBRAPASSAGE the red lantern hangs in the cellar beside the old barrel."
ENTRIES = ("honest-entry-xyz", "liar-entry-xyz")


def make_store(folder: Path, n: int = 2, reveal: bool = True) -> tuple[Store, HumanQueue, dict[str, str]]:
    """A store with `n` two-turn debates in the judging queue, a judge "alice" and an admin "boss"."""
    store = Store(folder)
    store.add_run(RunInfo(RUN, "tournament", "", time.time()))
    questions, transcripts, speeches = [], [], []
    for k in range(n):
        q = Question(f"q{k}", f"Where is lantern {k}?", (f"in the cellar {k}", f"in the attic {k}"), 0,
                     passage=f"{PASSAGE} story {k}")
        t = Transcript(f"t{k}", RUN, f"m{k}", q.id, "debate",
                       (Seat("debater_a", ENTRIES[0], 0), Seat("debater_b", ENTRIES[1], 1)), status="complete")
        texts = [
            "It is the cellar: <v_quote>the red lantern hangs in the cellar</v_quote>.",
            "Attic! <u_quote>the lantern sits in the attic</u_quote> <script>alert(1)</script>",
            "Turn two for the cellar.",
            "Turn two for the attic.",
        ]
        for i, text in enumerate(texts):
            side = i % 2
            speeches.append(Speech(t.id, i, i // 2, ("debater_a", "debater_b")[side], side, ENTRIES[side], text, judge_text=text))
        questions.append(q)
        transcripts.append(t)
    store.add_questions(RUN, questions)
    store.add_transcripts(transcripts)
    store.add_speeches(speeches)
    queue = HumanQueue(store)
    queue.enqueue(RUN, store.transcripts(RUN), judges_per_debate=1, reveal=reveal)
    tokens = {"alice": queue.add_judge("alice"), "boss": queue.add_judge("boss", admin=True)}
    return store, queue, tokens


def texts(at) -> str:
    """Every piece of text the page shows."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "text", "info", "success", "error", "warning"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


@pytest.fixture
def app_store(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBATE_RESULTS", str(tmp_path / "results"))
    return make_store(tmp_path / "results")


def login(token: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.text_input(key="login_token").input(token)
    at.button(key="login_submit").click()
    at.run()
    assert not at.exception, at.exception
    return at


def test_wrong_token_is_refused(app_store):
    at = login("not-a-token")
    assert any("wrong or has been revoked" in e.value for e in at.error)
    assert "lantern" not in texts(at)


def test_token_in_address_is_refused(app_store):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["token"] = app_store[2]["alice"]
    at.run()
    assert any("never accepted in the address" in e.value for e in at.error)
    assert "lantern" not in texts(at) and not at.text_input


def test_judge_flow_stores_verdict_with_beliefs(app_store):
    store, queue, tokens = app_store
    at = login(tokens["alice"])
    page = texts(at)
    slot_id = at.session_state["slot_id"]
    order = queue.slot(slot_id).order
    t_id = queue.slot(slot_id).transcript_id
    k = int(t_id[1:])
    assert f"Where is lantern {k}?" in page and "Debater for A" in page and "Debater for B" in page
    assert "ZEBRAPASSAGE" not in page and "correct" not in page.lower()
    assert ENTRIES[0] not in page and ENTRIES[1] not in page and t_id not in page and slot_id not in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "Turn two" not in page  # the second turn waits for the first belief
    # belief after turn 1: 70% for the displayed A
    at.slider(key="belief_0").set_value(70)
    at.button(key="belief_submit_0").click()
    at.run()
    assert "Turn two" in texts(at)
    assert queue.slot(slot_id).beliefs == pytest.approx((view.to_answer0(0.7, order),))
    final, reason, submit = at.slider(key="final"), at.text_area(key="reason"), at.button(key="final_submit")
    final.set_value(50)
    reason.input("the quote was verified")
    submit.click()
    at.run()
    assert any("50%" in e.value for e in at.error) and not store.verdicts(RUN)
    at.slider(key="final").set_value(80)
    at.text_area(key="reason").input("  ")
    at.button(key="final_submit").click()
    at.run()
    assert any("reason" in e.value for e in at.error) and not store.verdicts(RUN)
    at.slider(key="final").set_value(80)
    at.text_area(key="reason").input("the quote was verified")
    at.button(key="final_submit").click()
    at.run()
    assert not at.exception
    (v,) = store.verdicts(RUN)
    assert v.judge == "human" and v.transcript_id == t_id
    assert v.p_answer0 == pytest.approx(view.to_answer0(0.8, order))
    assert v.beliefs == pytest.approx((view.to_answer0(0.7, order),))
    assert "alice" in v.raw and "the quote was verified" in v.raw
    done = texts(at)
    assert "verdict is stored" in done and f"in the cellar {k}" in done  # revealed after the verdict
    at.button(key="next_debate").click()
    at.run()
    assert at.session_state["slot_id"] != slot_id  # the next debate, its widgets fresh
    assert "Turn 1 of 2" in texts(at) and at.slider(key="belief_0").value == 50


def test_refresh_resumes_held_slot_at_next_turn(app_store):
    store, queue, tokens = app_store
    at = login(tokens["alice"])
    slot_id = at.session_state["slot_id"]
    at.slider(key="belief_0").set_value(30)
    at.button(key="belief_submit_0").click()
    at.run()
    again = login(tokens["alice"])  # a new session, as after a page refresh
    assert again.session_state["slot_id"] == slot_id
    page = texts(again)
    assert "Turn two" in page and "Your belief after turn 1: 30%" in page


def test_revoked_token_logs_out_at_once(app_store):
    store, queue, tokens = app_store
    at = login(tokens["alice"])
    queue.revoke("alice")
    at.run()
    assert any("no longer valid" in e.value for e in at.error)
    assert "lantern" not in texts(at)


def _open_page(url_path: str) -> None:
    from ui import admin_pages

    {url: func for func, _, url in admin_pages.PAGES}[url_path]()


def _admin_app(token: str, url_path: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_open_page, args=(url_path,), default_timeout=60)
    at.session_state["token"] = token
    return at.run()


@pytest.mark.parametrize("url_path", ["leaderboard", "accuracy", "agreement", "queue", "transcripts"])
def test_judge_cannot_open_admin_pages(app_store, url_path):
    at = _admin_app(app_store[2]["alice"], url_path)
    assert [e.value for e in at.error] == ["Admins only: this page needs an admin token."]
    assert not at.dataframe and "ZEBRAPASSAGE" not in texts(at)


def test_admin_pages(app_store):
    store, queue, tokens = app_store
    # two human verdicts on one debate (for agreement) and one model verdict
    for name, p in (("h1", 0.8), ("h2", 0.3)):
        store.add_verdicts([Verdict(f"v-{name}", RUN, "t0", "q0", "human", p, winner=0 if p > 0.5 else 1,
                                    raw=f'{{"judge_name": "{name}"}}', beliefs=(0.6,))])
    store.add_verdicts([Verdict("v-model", RUN, "t0", "q0", "judge", 0.9, p_orders=(0.9, 0.9), winner=0)])
    at = _admin_app(tokens["boss"], "queue")
    assert not at.error and RUN in str(at.dataframe[0].value)
    for url in ("leaderboard", "accuracy", "agreement", "transcripts"):
        at = _admin_app(tokens["boss"], url)
        assert not at.exception and not at.error, (url, at.exception)
    assert "ZEBRAPASSAGE" in texts(at) and "(correct)" in texts(at)


# -- view.py ----------------------------------------------------------------------------------------
def test_render_escapes_and_marks_quotes():
    out = view.render_speech('<script>alert("x")</script> <v_quote>found it</v_quote> and <u_quote>made up</u_quote>\nnext')
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert 'class="vq"' in out and ">found it</span>" in out
    assert 'class="uq"' in out and ">made up</span>" in out and view.NOT_FOUND_NOTE in out
    assert "\n" not in out and "<br>" in out
    # a tag smuggled inside a quote stays escaped
    assert "<b>" not in view.render_speech("<v_quote><b>x</b></v_quote>")


def test_probability_mapping_under_both_shuffles():
    answers = ("zero", "one")
    for order in (0, 1):
        a, b = view.displayed_answers(answers, order)
        p0 = view.to_answer0(0.8, order)
        # 80% on the displayed A is 80% on whichever answer A shows
        assert (p0 if a == "zero" else 1 - p0) == pytest.approx(0.8)
        assert view.to_displayed_a(p0, order) == pytest.approx(0.8)
        assert view.letter_of(answers.index(a), order) == "A" and view.letter_of(answers.index(b), order) == "B"
        assert view.role_label("debater_a", answers.index(a), order) == "Debater for A"


def test_turns_beliefs_calibration_agreement():
    sp = [Speech("t", i, i // 2, "debater_a", 0, "e", "x") for i in range(6)]
    assert [len(g) for g in view.group_turns(sp)] == [2, 2, 2]
    assert view.beliefs_required(3) == 2 and view.beliefs_required(1) == 0 and view.beliefs_required(0) == 0
    assert view.final_problem(50, "ok reason") and view.final_problem(70, " ") and view.final_problem(70, "fine") is None
    assert view.final_problem(70, "\u200b\u200b\u200b") and view.final_problem(70, "x" * 2001)
    assert view.reason_counter("ab  c") == ("4 of at most 2,000 characters", False)
    assert view.reason_counter("y" * 2345)[1] and "345 over the limit" in view.reason_counter("y" * 2345)[0]
    vs = [Verdict(f"v{i}", "r", t, "q", "human", p, winner=w) for i, (t, p, w) in
          enumerate([("a", 0.8, 0), ("a", 0.7, 0), ("a", 0.2, 1), ("b", 0.9, 0)])]
    a = view.agreement(vs)
    assert (a.debates, a.pairs, a.agree) == (1, 3, 1)


def test_admin_login_does_not_judge(app_store):
    at = login(app_store[2]["boss"])
    assert "Admins do not judge" in texts(at) and "lantern" not in texts(at)
    assert at.session_state["token"] and "slot_id" not in at.session_state


def test_stale_page_is_refused(app_store):
    store, queue, tokens = app_store
    at = login(tokens["alice"])
    slot_id = at.session_state["slot_id"]
    # the slot went to someone else after a timeout: this session's lease is old
    store._conn().execute("UPDATE slots SET lease = 'someone-else' WHERE id = ?", (slot_id,))
    at.slider(key="belief_0").set_value(70)
    at.run()
    assert any("out of date" in e.value for e in at.error) and "lantern" not in texts(at)
    assert queue.slot(slot_id).beliefs == ()


# -- issue 11: pages that never crash, forms that say what they did, no stray identifiers -------------
def _to_final_step(at) -> None:
    """Give the belief after turn 1 (the two-turn debates need one) to reach the final verdict."""
    at.slider(key="belief_0").set_value(60)
    at.button(key="belief_submit_0").click()
    at.run()
    assert at.button(key="final_submit")


def _submit_final(at, pct: int, reason: str):
    at.slider(key="final").set_value(pct)
    at.text_area(key="reason").input(reason)
    at.button(key="final_submit").click()
    return at.run()


def test_a_reason_of_invisible_characters_is_refused(app_store):
    store, queue, tokens = app_store
    at = login(tokens["alice"])
    _to_final_step(at)
    for reason in ("\u200b\u200b\u200b", "\u00a0\u3000\u2060\ufeff  \u200b"):
        _submit_final(at, 80, reason)
        assert [e.value for e in at.error] == [
            "Give a short reason for your verdict: at least 3 visible characters (spaces and invisible characters do not count)."]
        assert not store.verdicts(RUN)
    _submit_final(at, 80, "\u200bthe  quote\u200b was verified ")
    (v,) = store.verdicts(RUN)
    assert json.loads(v.raw)["reason"] == "the quote was verified"  # stored as counted


def test_a_reason_over_the_limit_gets_the_message_and_stays_in_the_field(app_store):
    store, queue, tokens = app_store
    at = login(tokens["alice"])
    _to_final_step(at)
    assert "at most 2,000 characters" in at.text_area(key="reason").label
    assert "0 of at most 2,000 characters" in texts(at)  # the counter under the field
    long = "x" * 2500
    at.text_area(key="reason").input(long).run()  # leaving the field updates the counter, before any submit
    assert [w.value for w in at.warning] == [
        "2,500 of at most 2,000 characters: 500 over the limit. Shorten it before you submit; a reason over the "
        "limit is refused, never cut."]
    _submit_final(at, 80, long)
    assert [e.value for e in at.error] == [
        "Your reason is 2,500 characters long; the limit is 2,000. Shorten it by 500 characters and submit again; "
        "nothing was stored."]
    assert at.text_area(key="reason").value == long and not store.verdicts(RUN)  # nothing cut, nothing lost
    _submit_final(at, 80, "y" * 1_000_000)  # what a forged websocket message could carry
    assert "1,000,000 characters long" in at.error[0].value and not store.verdicts(RUN)
    _submit_final(at, 80, "z" * 2000)
    (v,) = store.verdicts(RUN)
    assert json.loads(v.raw)["reason"] == "z" * 2000


def test_two_tabs_of_one_judge_keep_the_first_answer_and_say_so(app_store):
    store, queue, tokens = app_store
    first, second = login(tokens["alice"]), login(tokens["alice"])
    slot_id = first.session_state["slot_id"]
    assert second.session_state["slot_id"] == slot_id
    order = queue.slot(slot_id).order
    first.slider(key="belief_0").set_value(70)
    first.button(key="belief_submit_0").click()
    first.run()
    second.slider(key="belief_0").set_value(40)
    second.button(key="belief_submit_0").click()
    second.run()
    assert [w.value for w in second.warning] == [
        "This debate was answered in another tab: your belief after turn 1 given there (70% that A is correct) is "
        "kept; the 40% given here was not stored."]
    assert queue.slot(slot_id).beliefs == pytest.approx((view.to_answer0(0.7, order),))
    assert "Turn two" in texts(second) and "Your belief after turn 1: 70%" in texts(second)
    _submit_final(first, 80, "first tab's reason")
    _submit_final(second, 20, "second tab's reason")
    page = texts(second)
    assert [e.value for e in second.error] == [
        "This debate was answered in another tab: the verdict given there first is stored, and nothing from this tab "
        "changed it. Load the next debate."]
    assert "another judge" not in page and "timeout" not in page
    (v,) = store.verdicts(RUN)
    assert v.p_answer0 == pytest.approx(view.to_answer0(0.8, order)) and "first tab's reason" in v.raw
    second.button(key="next_debate").click()
    second.run()
    assert second.session_state["slot_id"] != slot_id and "Turn 1 of 2" in texts(second)


def _payload(at) -> str:
    """Everything the page sends for its elements: texts, widget ids (which embed the keys), labels, form ids."""
    out = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        out.append(str(getattr(node, "id", "")))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    walk(at.sidebar)
    return "\n".join(out)


def test_no_slot_id_or_run_name_in_the_judge_page(app_store):
    store, queue, tokens = app_store
    at = login(tokens["alice"])
    slot_id = at.session_state["slot_id"]
    t_id = queue.slot(slot_id).transcript_id
    for step in range(2):
        payload = _payload(at)
        assert "belief_0" in payload or "final" in payload  # the widgets are there, keyed by turn only
        for secret in (slot_id, RUN, t_id, at.session_state["lease"], "ZEBRAPASSAGE", *ENTRIES):
            assert secret not in payload, (step, secret)
        if step == 0:
            _to_final_step(at)


def test_navigation_lists_only_the_pages_of_the_role(app_store, monkeypatch):
    """The pages handed to st.navigation are what Streamlit sends to the browser, hidden ones included."""
    import streamlit as st

    sent: list[list[tuple[str, str]]] = []
    real = st.navigation

    def spy(pages, **kw):
        sent.append([(p.title, p.url_path) for p in pages])
        return real(pages, **kw)

    monkeypatch.setattr(st, "navigation", spy)
    admin_words = ("leaderboard", "accuracy", "agreement", "queue", "transcripts")
    from streamlit.testing.v1 import AppTest

    AppTest.from_file(APP, default_timeout=60).run()  # a visitor
    assert sent[-1] == [("Log in", "")]  # the default page has the root path
    login(app_store[2]["alice"])
    assert sent[-1] == [("Judge", "")]
    assert not any(w in str(sent).lower() for w in admin_words)
    login(app_store[2]["boss"])
    assert {url for _, url in sent[-1]} == {"", *admin_words}


def _nyu_subset(folder: Path, per_kind: int = 3) -> Path:
    """A few rooms of each setting, with and without their debate file (verdict-only), as an NYU folder."""
    (folder / "debates").mkdir(parents=True)
    taken: dict[tuple, int] = {}
    lines = []
    for line in (NYU_DIR / "debates-metadata.jsonl").read_text().splitlines():
        meta = json.loads(line)
        if "Complete" not in (meta.get("status") or {}):
            continue
        file = NYU_DIR / "debates" / f"{meta['name']}.json"
        s = meta.get("setting") or {}
        kind = (s.get("isHuman"), s.get("isDebate"), file.exists())
        if taken.get(kind, 0) < per_kind:
            taken[kind] = taken.get(kind, 0) + 1
            lines.append(line)
            if file.exists():
                (folder / "debates" / file.name).symlink_to(file)
    assert len(taken) == 8, taken  # human/GPT-4 x debate/consultancy x full/verdict-only
    (folder / "debates-metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def report_store(tmp_path, monkeypatch):
    """Runs of every kind: an imported NYU run (skipped without the data), one with only failed verdicts on a
    failed and a complete debate, an empty one, and the app's own run; an admin token."""
    results = tmp_path / "results"
    store, queue, tokens = make_store(results)
    runs = [RUN]
    if NYU_DIR.exists():
        from debate.nyu import import_nyu

        summary = import_nyu(_nyu_subset(tmp_path / "nyu"), store)
        assert summary.full and summary.verdict_only
        runs.append("nyu")
    store.add_run(RunInfo("failed-only", "tournament", "", time.time()))
    seats = (Seat("debater_a", "a", 0), Seat("debater_b", "b", 1))
    store.write_all(
        "failed-only", questions=[Question("fq", "Q?", ("x", "y"), 0, passage="P.")],
        transcripts=[Transcript("ft0", "failed-only", "m", "fq", "debate", seats, status="failed", error="model call failed"),
                     Transcript("ft1", "failed-only", "m", "fq", "consultancy", (Seat("consultant", "a", 0),), status="complete")],
        verdicts=[Verdict("fv0", "failed-only", "ft0", "fq", "judge", None, error="unparseable", raw="??"),
                  Verdict("fv1", "failed-only", "ft1", "fq", "human", None, error="no answer")],
    )
    store.add_run(RunInfo("empty", "tournament", "", time.time()))
    monkeypatch.setenv("DEBATE_RESULTS", str(results))
    return store, tokens["boss"], runs + ["failed-only", "empty"]


def _choices(at, key: str) -> list:
    boxes = [b for b in at.selectbox if b.key == key]
    return list(boxes[0].options) if boxes else []


def _one_of_each_kind(store: Store, run) -> list:
    """A transcript of each kind in the run (verdict-only, failed, complete with speeches), or [None]."""
    kinds: dict[tuple, str] = {}
    for t in store.transcripts(run) if run else []:
        kinds.setdefault(("verdict_only" in t.tags, t.status, t.protocol), t.id)
    return list(kinds.values()) or [None]


def test_admin_pages_render_every_run_and_judge(report_store):
    """No page shows an exception or an error on an imported NYU run (verdict-only consultancies have no
    seats; GPT-4 debates against itself), a run of failed verdicts, or an empty run."""
    store, token, runs = report_store
    seen = []
    for url in ("leaderboard", "accuracy", "agreement", "queue", "transcripts"):
        at = _admin_app(token, url)
        for run in runs if url != "queue" else [None]:
            if run:
                at.selectbox(key="admin_run").set_value(run).run()
            for judge in _choices(at, "admin_judge") or [None]:
                if judge:
                    at.selectbox(key="admin_judge").set_value(judge).run()
                for tid in _one_of_each_kind(store, run) if url == "transcripts" else [None]:
                    if tid:
                        at.selectbox(key="admin_transcript").set_value(tid).run()
                    assert not at.exception and not at.error, (url, run, judge, tid, at.exception, [e.value for e in at.error])
                    seen.append((url, run, judge, len(at.dataframe)))
    tables = {(u, r, j): n for u, r, j, n in seen}
    if "nyu" in runs:
        assert tables[("leaderboard", "nyu", "human")] == 1 and tables[("accuracy", "nyu", "human")] >= 2
        assert tables[("leaderboard", "nyu", "human-offline")] == 1  # GPT-4 self-play left out, people rated
    assert tables[("accuracy", "failed-only", "judge")] >= 1 and tables[("leaderboard", "empty", None)] == 0


def test_an_unexpected_error_is_logged_and_named_never_a_traceback(app_store, monkeypatch, caplog):
    store, queue, tokens = app_store
    store.add_verdicts([Verdict("v-h", RUN, "t0", "q0", "human", 0.8, winner=0, raw='{"judge_name": "h"}')])

    def broken(*args, **kwargs):
        raise IndexError("tuple index out of range")

    monkeypatch.setattr("ui.admin_pages.build_report", broken)
    with caplog.at_level(logging.ERROR, logger="ui.page_errors"):
        at = _admin_app(tokens["boss"], "accuracy")
    assert not at.exception
    assert at.error[0].value.startswith(f"Could not show the accuracy by protocol of run '{RUN}' for judge 'human': an "
                                        "unexpected error (IndexError). It is logged on the server")
    assert "tuple index out of range" not in texts(at) and "Traceback" not in texts(at)
    assert at.subheader[1].value.startswith("By judge") and len(at.dataframe) >= 1  # the other parts still show
    (record,) = [r for r in caplog.records if r.name == "ui.page_errors"]
    assert record.exc_info[0] is IndexError and "accuracy by protocol" in record.getMessage()
