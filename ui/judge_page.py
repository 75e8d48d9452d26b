"""The judging page: one debate at a time from the queue, turn by turn, beliefs after each turn, a final
probability with a reason. Never shows the passage, the correct answer (before a revealing verdict),
timestamps, model or entry names, or ids that would tell who is honest."""

from __future__ import annotations

from typing import Optional

import streamlit as st

from judges.human_queue import HumanQueue, Judge, QueueError, Slot
from debate.protocols import get_protocol
from debate.records import Question, Transcript
from debate.store import Store
from ui.app import get_queue, get_store, require_user
from ui.view import (
    beliefs_required, displayed_answers, final_problem, group_turns, letter_of, shuffle_order, speech_html,
    text_html, to_answer0, to_displayed_a,
)


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
    for key in ("slot_id", "lease", "done"):
        st.session_state.pop(key, None)


def _next_button(label: str = "Next debate") -> None:
    if st.button(label, key="next_debate", type="primary"):
        _clear_slot()
        st.rerun()


def judge_page() -> None:
    """The page a judge works on (judges only)."""
    user = require_user()
    st.title("Judge a debate")
    if user.admin:
        st.info("Admins do not judge: the admin pages show the stories and the answers. Use a judge token to judge.")
        return
    store, queue = get_store(), get_queue()
    if st.session_state.get("done"):
        _show_done(store, queue, st.session_state["done"])
        return
    slot = _current_slot(queue, user)
    if slot is None:
        st.success("Nothing to judge right now. Thank you! Come back later for more debates.")
        return
    if slot.judge != user.name or slot.lease != st.session_state.get("lease") or slot.status != "assigned":
        st.error("This page is out of date: the debate was given to another judge after a timeout.")
        _next_button("Load the next debate")
        return
    try:
        _render(store, queue, user, slot)
    except QueueError as e:
        st.error(str(e))
        _next_button("Load the next debate")


def _current_slot(queue: HumanQueue, user: Judge) -> Optional[Slot]:
    """The slot this session holds, or the judge's held slot / the next open one (stored in the session)."""
    slot_id = st.session_state.get("slot_id")
    if slot_id:
        return queue.slot(slot_id)
    try:
        slot = queue.take(user.name)
    except QueueError as e:
        st.error(str(e))
        st.stop()
    if slot is not None:
        st.session_state["slot_id"], st.session_state["lease"] = slot.id, slot.lease
    return slot


def _render(store: Store, queue: HumanQueue, user: Judge, slot: Slot) -> None:
    t = load_transcript(store, slot.transcript_id)
    q = load_question(store, slot.run, t.question_id)
    order = shuffle_order(slot.id)
    a, b = displayed_answers(q.answers, order)
    st.markdown("**Question**")
    st.markdown(text_html(q.question), unsafe_allow_html=True)
    st.markdown(text_html(f"A: {a}"), unsafe_allow_html=True)
    st.markdown(text_html(f"B: {b}"), unsafe_allow_html=True)
    st.caption("Quotes highlighted green were found in the story; red struck-through quotes were not.")
    turns = group_turns(t.speeches)
    need = beliefs_required(len(turns), protocol_beliefs(t.protocol))
    given = slot.beliefs
    shown = min(len(given) + 1, len(turns))
    for i in range(shown):
        st.subheader(f"Turn {i + 1} of {len(turns)}")
        for s in turns[i]:
            st.markdown(speech_html(s, order), unsafe_allow_html=True)
        if i < need:
            if i < len(given):
                pct = round(100 * to_displayed_a(given[i], order))
                st.caption(f"Your belief after turn {i + 1}: {pct}% that A is correct.")
            else:
                _belief_form(queue, user, slot, i, order)
                return
    _final_form(queue, user, slot, order, need)


def _belief_form(queue: HumanQueue, user: Judge, slot: Slot, turn: int, order: int) -> None:
    with st.form(f"belief_form_{slot.id}_{turn}"):
        pct = st.slider(f"After turn {turn + 1}: how likely is answer A correct? (%)", 1, 99, 50, key=f"belief_{slot.id}_{turn}")
        submitted = st.form_submit_button("Give belief and see the next turn", key=f"belief_submit_{slot.id}_{turn}")
    if submitted:
        try:
            queue.add_belief(slot.id, user.name, st.session_state["lease"], turn, to_answer0(pct / 100, order))
        except QueueError as e:
            st.error(str(e))
            return
        st.rerun()


def _final_form(queue: HumanQueue, user: Judge, slot: Slot, order: int, need: int) -> None:
    st.subheader("Your verdict")
    with st.form(f"final_form_{slot.id}"):
        pct = st.slider("Final: how likely is answer A correct? (%)", 1, 99, 50, key=f"final_{slot.id}")
        reason = st.text_area("Your reason (a sentence or two)", key=f"reason_{slot.id}", max_chars=2000)
        submitted = st.form_submit_button("Submit verdict", key=f"final_submit_{slot.id}", type="primary")
    if not submitted:
        return
    problem = final_problem(pct, reason)
    if problem:
        st.error(problem)
        return
    try:
        queue.submit(slot.id, user.name, st.session_state["lease"], to_answer0(pct / 100, order), reason, need)
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
        order = shuffle_order(slot.id)
        st.info(f"The correct answer was {letter_of(q.correct, order)}: {q.answers[q.correct]}")
    _next_button()
