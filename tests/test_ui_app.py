"""The judging app headless (streamlit AppTest) and the pure view logic behind it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from judges.human_queue import HumanQueue
from debate.records import Question, RunInfo, Seat, Speech, Transcript, Verdict
from debate.store import Store
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
    order = view.shuffle_order(slot_id)
    t_id = queue.slot(slot_id).transcript_id
    k = int(t_id[1:])
    assert f"Where is lantern {k}?" in page and "Debater for A" in page and "Debater for B" in page
    assert "ZEBRAPASSAGE" not in page and "correct" not in page.lower()
    assert ENTRIES[0] not in page and ENTRIES[1] not in page and t_id not in page and slot_id not in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "Turn two" not in page  # the second turn waits for the first belief
    # belief after turn 1: 70% for the displayed A
    at.slider(key=f"belief_{slot_id}_0").set_value(70)
    at.button(key=f"belief_submit_{slot_id}_0").click()
    at.run()
    assert "Turn two" in texts(at)
    assert queue.slot(slot_id).beliefs == pytest.approx((view.to_answer0(0.7, order),))
    final, reason, submit = at.slider(key=f"final_{slot_id}"), at.text_area(key=f"reason_{slot_id}"), at.button(key=f"final_submit_{slot_id}")
    final.set_value(50)
    reason.input("the quote was verified")
    submit.click()
    at.run()
    assert any("50%" in e.value for e in at.error) and not store.verdicts(RUN)
    at.slider(key=f"final_{slot_id}").set_value(80)
    at.text_area(key=f"reason_{slot_id}").input("  ")
    at.button(key=f"final_submit_{slot_id}").click()
    at.run()
    assert any("reason" in e.value for e in at.error) and not store.verdicts(RUN)
    at.slider(key=f"final_{slot_id}").set_value(80)
    at.text_area(key=f"reason_{slot_id}").input("the quote was verified")
    at.button(key=f"final_submit_{slot_id}").click()
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
    assert at.session_state["slot_id"] != slot_id  # the next debate


def test_refresh_resumes_held_slot_at_next_turn(app_store):
    store, queue, tokens = app_store
    at = login(tokens["alice"])
    slot_id = at.session_state["slot_id"]
    at.slider(key=f"belief_{slot_id}_0").set_value(30)
    at.button(key=f"belief_submit_{slot_id}_0").click()
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
    ids = [f"slot{i}" for i in range(20)]
    assert {view.shuffle_order(i) for i in ids} == {0, 1}
    assert view.shuffle_order("slot3") == view.shuffle_order("slot3")
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
    bins = view.calibration_bins([(0.9, 0), (0.05, 1), (0.8, 1), (0.5, 0)])
    assert [(b.n, b.accuracy) for b in bins] == [(1, 0.0), (2, 1.0)]
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
    at.slider(key=f"belief_{slot_id}_0").set_value(70)
    at.run()
    assert any("out of date" in e.value for e in at.error) and "lantern" not in texts(at)
    assert queue.slot(slot_id).beliefs == ()
