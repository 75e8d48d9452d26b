"""The human judging queue: tokens, atomic assignment, timeouts, stories, refusals and concurrent judges."""

from __future__ import annotations

import threading
import time

import pytest

from judges.human_queue import SLOT_TIMEOUT_S, HumanQueue, QueueError, hash_token
from debate.records import Question, RunInfo, Seat, Speech, Transcript
from debate.store import Store


def _fill(store: Store, n_questions: int = 4, per_story: int = 2, run: str = "r") -> list[Transcript]:
    """n_questions stories, each with `per_story` debates (a story's debates share its passage)."""
    store.add_run(RunInfo(run, "tournament", "{}", time.time()))
    qs, ts, sp = [], [], []
    for i in range(n_questions):
        q = Question(f"q{i}", f"Question {i}?", (f"yes {i}", f"no {i}"), i % 2, passage=f"Story {i}. The answer is yes {i}.")
        qs.append(q)
        for k in range(per_story):
            t = Transcript(f"t{i}-{k}", run, "m", q.id, "debate", (Seat("debater_a", "x", 0), Seat("debater_b", "y", 1)), status="complete")
            ts.append(t)
            sp += [Speech(t.id, 0, 0, "debater_a", 0, "x", "A speech.", judge_text="A speech."),
                   Speech(t.id, 1, 0, "debater_b", 1, "y", "B speech.", judge_text="B speech.")]
    store.add_questions(run, qs)
    store.add_transcripts(ts)
    store.add_speeches(sp)
    return ts


@pytest.fixture()
def queue(tmp_path):
    store = Store(tmp_path)
    ts = _fill(store)
    q = HumanQueue(store)
    q.enqueue("r", ts, judges_per_debate=2)
    return q


def test_tokens_are_hashed_and_revocable(queue):
    token = queue.add_judge("ann")
    rows = queue.store._conn().execute("SELECT token_hash FROM judges").fetchall()
    assert rows == [(hash_token(token),)] and token not in str(rows)
    assert queue.login(token).name == "ann" and not queue.login(token).admin
    assert queue.login("wrong") is None and queue.login("") is None
    with pytest.raises(QueueError, match="exists"):
        queue.add_judge("ann")
    queue.revoke("ann")
    assert queue.login(token) is None


def test_enqueue_is_idempotent(queue):
    ts = queue.store.transcripts("r")
    assert queue.enqueue("r", ts, judges_per_debate=2) == 0
    assert queue.queue_table("r")[0]["open"] == 16


def test_a_judge_never_gets_a_story_twice_and_never_one_debate_twice(queue):
    queue.add_judge("ann")
    stories = []
    while (slot := queue.take("ann")) is not None:
        t = next(t for t in queue.store.transcripts("r") if t.id == slot.transcript_id)
        stories.append(t.question_id)
        queue.submit(slot.id, "ann", slot.lease, 0.7, "because")
    assert sorted(stories) == ["q0", "q1", "q2", "q3"]  # one debate per story, then nothing


def test_take_returns_the_held_slot_until_it_times_out(queue):
    queue.add_judge("ann")
    queue.add_judge("bob")
    now = time.time()
    a = queue.take("ann", now=now)
    assert queue.take("ann", now=now + 10).id == a.id
    b = queue.take("bob", now=now + 10)
    assert b.id != a.id
    # ann walks away; after the timeout her slot is the next one anyone can take
    later = now + SLOT_TIMEOUT_S + 1
    with pytest.raises(QueueError):
        queue.take("carl", now=later)
    queue.add_judge("cat")
    c = queue.take("cat", now=later)
    assert c.id == a.id and c.lease != a.lease
    with pytest.raises(QueueError, match="out of date"):  # ann's page is stale now
        queue.submit(a.id, "ann", a.lease, 0.8, "late answer")
    assert queue.store.count("verdicts", "r") == 0


def test_refusals_change_nothing(queue):
    queue.add_judge("ann")
    s = queue.take("ann")
    for p, reason, msg in [(0.5, "fine reason", "50/50"), (0.7, "  ", "reason"), (1.5, "x y z", "between 0 and 1"),
                           (float("nan"), "x y z", "between 0 and 1")]:
        with pytest.raises(QueueError, match=msg):
            queue.submit(s.id, "ann", s.lease, p, reason)
    with pytest.raises(QueueError, match="belief"):
        queue.submit(s.id, "ann", s.lease, 0.7, "good reason", turns_required=1)
    with pytest.raises(QueueError, match="out of date"):
        queue.submit(s.id, "ann", "forged-lease", 0.7, "good reason")
    assert queue.store.count("verdicts", "r") == 0 and queue.slot(s.id).status == "assigned"
    queue.add_belief(s.id, "ann", s.lease, 0, 0.6)
    with pytest.raises(QueueError, match="already given or is out of order"):
        queue.add_belief(s.id, "ann", s.lease, 0, 0.9)
    v = queue.submit(s.id, "ann", s.lease, 0.7, "good reason", turns_required=1)
    assert v.beliefs == (0.6,) and v.winner == 0 and v.judge == "human"
    with pytest.raises(QueueError, match="already submitted"):  # a refresh or a second tab
        queue.submit(s.id, "ann", s.lease, 0.2, "changed my mind")
    stored = queue.store.verdicts("r")
    assert len(stored) == 1 and stored[0].p_answer0 == 0.7


def test_revoking_a_judge_returns_their_slot(queue):
    queue.add_judge("ann")
    s = queue.take("ann")
    queue.revoke("ann")
    assert queue.slot(s.id).status == "open"


def test_concurrent_judges_lose_no_verdict_and_take_no_slot_twice(tmp_path):
    """Eight judges in threads, each with its own connection, judge until the queue is empty."""
    store = Store(tmp_path)
    ts = _fill(store, n_questions=12, per_story=1)
    q = HumanQueue(store)
    q.enqueue("r", ts, judges_per_debate=3)  # 36 slots
    names = [f"judge{i}" for i in range(8)]
    for n in names:
        q.add_judge(n)
    submitted: list[tuple[str, str]] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        mine = HumanQueue(Store(tmp_path))  # its own connection, as a separate browser session would have
        try:
            while (slot := mine.take(name)) is not None:
                mine.submit(slot.id, name, slot.lease, 0.8, f"verdict by {name}")
                with lock:
                    submitted.append((slot.id, name))
        except Exception as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    verdicts = store.verdicts("r")
    slot_ids = [s for s, _ in submitted]
    assert len(slot_ids) == len(set(slot_ids)) == 36 == len(verdicts)
    per_debate: dict[str, set] = {}
    for v in verdicts:
        import json

        per_debate.setdefault(v.transcript_id, set()).add(json.loads(v.raw)["judge_name"])
    assert all(len(judges) == 3 for judges in per_debate.values())  # three different people per debate
    print(f"concurrency: {len(names)} judges, {len(submitted)} verdicts submitted, {len(verdicts)} stored")
