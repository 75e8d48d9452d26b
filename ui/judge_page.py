"""The judging page: one debate at a time from the queue, turn by turn, beliefs after each turn, a final
probability with a reason. Never shows the passage, the correct answer (before a revealing verdict),
timestamps, model or entry names, or ids that would tell who is honest. Widget keys carry no id either
(Streamlit sends keys to the browser as CSS classes and element ids): they name the turn only.

One judge in two tabs holds one assignment: the answer given first is kept, and the other tab says so
("answered in another tab") instead of dropping its answer or blaming a timeout."""

from __future__ import annotations

from typing import Optional

import streamlit as st

from judges.human_queue import AnsweredElsewhere, HumanQueue, JudgeAccount, QueueError, Slot
from judges.reasons import REASON_MAX_CHARS
from debate.protocols import get_protocol
from debate.records import Question, Transcript
from debate.store import Store
from ui.app import get_queue, get_store, require_user
from ui.page_errors import guarded
from ui.view import (
    beliefs_required, displayed_answers, final_problem, group_turns, letter_of, reason_counter, speech_html,
    text_html, to_answer0, to_displayed_a,
)

SLOT_KEYS = ("slot_id", "lease", "done", "beliefs_seen")  # this session's assignment
FINAL_KEYS = ("final", "reason")  # the final verdict's widgets (fixed keys: the next debate starts them afresh)
ANSWERED_IN_OTHER_TAB = "This debate was answered in another tab"
OUT_OF_DATE = "This page is out of date: the debate was given to another judge after a timeout."


def load_transcript(store: Store, transcript_id: str) -> Transcript:
    """One transcript with its speeches (without reading the whole run)."""
    t = store.transcript(transcript_id)
    if t is None:
        raise QueueError("this debate is missing from the store; load the next debate")
    return t


def load_question(store: Store, run: str, question_id: str) -> Question:
    q = store.question(run, question_id)
    if q is None:
        raise QueueError("this debate's question is missing from the store; load the next debate")
    return q


def protocol_beliefs(name: str) -> bool:
    try:
        return get_protocol(name).beliefs
    except ValueError:
        return False


def _clear_slot() -> None:
    """Forget this session's debate and its widgets' values (the keys are the same for every debate)."""
    for key in list(st.session_state.keys()):
        if key in SLOT_KEYS or key in FINAL_KEYS or str(key).startswith("belief_"):
            del st.session_state[key]


def _next_button(label: str = "Next debate") -> None:
    if st.button(label, key="next_debate", type="primary"):
        _clear_slot()
        st.rerun()


def _pct(p_answer0: float, order: int) -> int:
    return round(100 * to_displayed_a(p_answer0, order))


@guarded("the judging page")
def judge_page() -> None:
    """The page a judge works on (judges only)."""
    user = require_user()
    st.title("Judge a debate")
    if user.admin:
        st.info("Admins do not judge: the admin pages show the stories and the answers. Use a judge token to judge.")
        return
    notice = st.session_state.pop("notice", None)
    if notice:
        st.warning(notice)
    store, queue = get_store(), get_queue()
    if st.session_state.get("done"):
        _show_done(store, queue, st.session_state["done"])
        return
    slot = _current_slot(queue, user)
    if slot is None:
        st.success("Nothing to judge right now. Thank you! Come back later for more debates.")
        return
    problem = _stale(slot, user)
    if problem:
        st.error(problem)
        _next_button("Load the next debate")
        return
    try:
        _render(store, queue, user, slot)
    except QueueError as e:
        st.error(str(e))
        _next_button("Load the next debate")


def _stale(slot: Slot, user: JudgeAccount) -> Optional[str]:
    """Why this session can no longer answer its debate, or None while it can."""
    mine = slot.judge == user.name and slot.lease == st.session_state.get("lease")
    if mine and slot.status == "assigned":
        return None
    if mine and slot.status == "done":
        return (f"{ANSWERED_IN_OTHER_TAB}: the verdict given there first is stored, and nothing from this tab "
                "changed it. Load the next debate.")
    return OUT_OF_DATE


def _current_slot(queue: HumanQueue, user: JudgeAccount) -> Optional[Slot]:
    """The slot this session holds, or the judge's held slot / the next open one (stored in the session)."""
    slot_id = st.session_state.get("slot_id")
    if slot_id:
        try:
            return queue.slot(slot_id)
        except QueueError:  # gone from the queue (its message names the id, which a judge must not see)
            _clear_slot()
    try:
        slot = queue.take(user.name)
    except QueueError as e:
        st.error(str(e))
        st.stop()
    if slot is not None:
        st.session_state["slot_id"], st.session_state["lease"] = slot.id, slot.lease
        st.session_state["beliefs_seen"] = len(slot.beliefs)  # resumed after a refresh: what is stored is seen
    return slot


def _render(store: Store, queue: HumanQueue, user: JudgeAccount, slot: Slot) -> None:
    t = load_transcript(store, slot.transcript_id)
    q = load_question(store, slot.run, t.question_id)
    order = slot.order
    a, b = displayed_answers(q.answers, order)
    st.markdown("**Question**")
    st.markdown(text_html(q.question), unsafe_allow_html=True)
    st.markdown(text_html(f"A: {a}"), unsafe_allow_html=True)
    st.markdown(text_html(f"B: {b}"), unsafe_allow_html=True)
    st.caption("Quotes highlighted green were found in the story; red struck-through quotes were not.")
    turns = group_turns(t.speeches)
    need = beliefs_required(len(turns), protocol_beliefs(t.protocol))
    given = slot.beliefs
    # this tab shows the turns it has answered; another tab of the same judge may have answered more, and
    # this tab's form for the turn it shows must still be read, so that it can say what became of it
    at = min(st.session_state.setdefault("beliefs_seen", len(given)), len(given))
    shown = min(at + 1, len(turns))
    for i in range(shown):
        st.subheader(f"Turn {i + 1} of {len(turns)}")
        for s in turns[i]:
            st.markdown(speech_html(s, order), unsafe_allow_html=True)
        if i < need:
            if i < at:
                st.caption(f"Your belief after turn {i + 1}: {_pct(given[i], order)}% that A is correct.")
            else:
                _belief_form(queue, user, slot, i, order)
                return
    _final_form(queue, user, slot, order, need)


def _answered_elsewhere(queue: HumanQueue, slot: Slot, turn: int, order: int, pct_here: Optional[int]) -> None:
    """Another tab gave the belief after `turn` first: keep it, say so on the next rerun, show the next turn."""
    stored = queue.slot(slot.id).beliefs
    there = f" ({_pct(stored[turn], order)}% that A is correct)" if turn < len(stored) else ""
    here = f"; the {pct_here}% given here was not stored" if pct_here is not None else ""
    st.session_state["notice"] = f"{ANSWERED_IN_OTHER_TAB}: your belief after turn {turn + 1} given there{there} is kept{here}."
    st.session_state["beliefs_seen"] = len(stored)
    st.rerun()


def _belief_form(queue: HumanQueue, user: JudgeAccount, slot: Slot, turn: int, order: int) -> None:
    with st.form(f"belief_form_{turn}"):
        pct = st.slider(f"After turn {turn + 1}: how likely is answer A correct? (%)", 1, 99, 50, key=f"belief_{turn}")
        submitted = st.form_submit_button("Give belief and see the next turn", key=f"belief_submit_{turn}")
    if turn < len(slot.beliefs):  # given in another tab since this one showed the form
        _answered_elsewhere(queue, slot, turn, order, pct if submitted else None)
    if not submitted:
        return
    try:
        queue.add_belief(slot.id, user.name, st.session_state["lease"], turn, to_answer0(pct / 100, order))
    except AnsweredElsewhere:  # the other tab's answer landed between this page's read and its write
        _answered_elsewhere(queue, slot, turn, order, pct)
    except QueueError as e:
        st.error(str(e))
        return
    st.session_state["beliefs_seen"] = turn + 1
    st.rerun()


def _final_form(queue: HumanQueue, user: JudgeAccount, slot: Slot, order: int, need: int) -> None:
    """The final probability and the reason. Not a form, so that the counter under the reason follows the
    text each time the field is left; nothing is stored before the button is pressed."""
    st.subheader("Your verdict")
    pct = st.slider("Final: how likely is answer A correct? (%)", 1, 99, 50, key="final")
    reason = st.text_area(
        f"Your reason (a sentence or two, at most {REASON_MAX_CHARS:,} characters)", key="reason",
        help=f"At most {REASON_MAX_CHARS:,} characters, counted as stored (runs of spaces count once, invisible "
             "characters not at all). A longer reason is refused with its length, never cut; your text stays here.",
    )
    counter, over = reason_counter(reason or "")
    (st.warning if over else st.caption)(counter)
    if not st.button("Submit verdict", key="final_submit", type="primary"):
        return
    problem = final_problem(pct, reason)
    if problem:
        st.error(problem)
        return
    try:
        queue.submit(slot.id, user.name, st.session_state["lease"], to_answer0(pct / 100, order), reason, need)
    except AnsweredElsewhere:
        st.error(f"{ANSWERED_IN_OTHER_TAB}: the verdict given there first is stored; this one ({pct}% that A is "
                 "correct) was not. Load the next debate.")
        _next_button("Load the next debate")
        return
    except QueueError as e:
        st.error(str(e))
        return
    st.session_state["done"] = slot.id
    st.rerun()


def _show_done(store: Store, queue: HumanQueue, slot_id: str) -> None:
    st.success("Your verdict is stored. Thank you!")
    slot = queue.slot(slot_id)
    if slot.reveal:
        t = load_transcript(store, slot.transcript_id)
        q = load_question(store, slot.run, t.question_id)
        st.info(f"The correct answer was {letter_of(q.correct, slot.order)}: {q.answers[q.correct]}")
    _next_button()
