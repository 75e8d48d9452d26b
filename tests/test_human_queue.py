"""The human judging queue: tokens, atomic assignment, timeouts, stories, refusals and concurrent judges."""

from __future__ import annotations

import json
import threading
import time

import pytest

from judges.human_queue import SLOT_TIMEOUT_S, AnsweredElsewhere, HumanQueue, QueueError, _legacy_order, hash_token
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
    with pytest.raises(QueueError, match="out of order"):
        queue.add_belief(s.id, "ann", s.lease, 1, 0.9)
    queue.add_belief(s.id, "ann", s.lease, 0, 0.6)
    with pytest.raises(AnsweredElsewhere, match="already given .* the first one is kept"):  # a second tab
        queue.add_belief(s.id, "ann", s.lease, 0, 0.9)
    v = queue.submit(s.id, "ann", s.lease, 0.7, "good reason", turns_required=1)
    assert v.beliefs == (0.6,) and v.winner == 0 and v.judge == "human"
    with pytest.raises(AnsweredElsewhere, match="answered in another tab"):  # a second tab or a repeated click
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


@pytest.mark.parametrize("reason", ["\u200b\u200b\u200b", " \u00a0\u3000\t\n ", "\u202e\u2060\ufeff", "a\u0301\u0301"])
def test_a_reason_of_invisible_characters_is_refused(queue, reason):
    queue.add_judge("ann")
    s = queue.take("ann")
    with pytest.raises(QueueError, match="at least 3 visible characters"):
        queue.submit(s.id, "ann", s.lease, 0.7, reason)
    assert queue.store.count("verdicts", "r") == 0 and queue.slot(s.id).status == "assigned"


def test_the_reason_is_stored_normalised_and_a_long_one_refused_whole(queue):
    queue.add_judge("ann")
    s = queue.take("ann")
    with pytest.raises(QueueError, match="2,001 characters long; the limit is 2,000. Shorten it by 1 character "):
        queue.submit(s.id, "ann", s.lease, 0.7, "x" * 2001)
    with pytest.raises(QueueError, match="1,000,000 characters long"):  # what a forged websocket message could send
        queue.submit(s.id, "ann", s.lease, 0.7, "y" * 1_000_000)
    assert queue.store.count("verdicts", "r") == 0
    # invisible characters and extra spaces do not count against the limit: they are not stored
    v = queue.submit(s.id, "ann", s.lease, 0.7, "\u200b" * 50 + "  The  quote\u00a0was\u200b verified. \r\n\r\n\r\n" + "z" * 1970)
    reason = json.loads(v.raw)["reason"]
    assert reason == "The quote was verified.\n\n" + "z" * 1970
    assert json.loads(queue.store.verdicts("r")[0].raw)["reason"] == reason


def test_the_shown_order_is_random_and_stored_with_the_slot(tmp_path):
    store = Store(tmp_path)
    ts = _fill(store, n_questions=20, per_story=2)
    q = HumanQueue(store)
    q.enqueue("r", ts, judges_per_debate=2)
    rows = store._conn().execute("SELECT id, shown_order FROM slots").fetchall()
    orders = [o for _, o in rows]
    assert set(orders) == {0, 1} and len(rows) == 80
    # not the old hash of the id (which anyone with the code could compute): at most chance agreement
    assert sum(o == _legacy_order(i) for i, o in rows) < 70  # by chance: 40 of 80 expected, 70 has odds below 1e-10
    q.add_judge("ann")
    slot = q.take("ann")
    assert slot.order == dict(rows)[slot.id]
    v = q.submit(slot.id, "ann", slot.lease, 0.8, "reason given")
    assert json.loads(v.raw)["shown_order"] == slot.order


def test_an_old_slots_table_is_migrated_without_losing_anything(tmp_path):
    """A database from before `shown_order`: the column is added, every slot, belief and verdict stays; the
    slot already taken keeps the order its judge saw, an open one gets a random one."""
    store = Store(tmp_path)
    ts = _fill(store, n_questions=2, per_story=1)
    conn = store._conn()
    conn.executescript(
        "CREATE TABLE judges (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL,"
        " revoked INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);"
        "CREATE TABLE slots (id TEXT PRIMARY KEY, run TEXT NOT NULL, transcript_id TEXT NOT NULL, k INTEGER NOT NULL,"
        " story TEXT NOT NULL, status TEXT NOT NULL, judge TEXT, lease TEXT, assigned REAL, beliefs TEXT NOT NULL DEFAULT '[]',"
        " verdict_id TEXT, reveal INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);"
        "CREATE TABLE seen (judge TEXT NOT NULL, story TEXT NOT NULL, PRIMARY KEY (judge, story));"
    )
    now = time.time()
    conn.execute("INSERT INTO judges VALUES ('ann', 'h', 0, 0, ?)", (now,))
    conn.execute("INSERT INTO slots VALUES ('s-taken', 'r', ?, 0, 'st0', 'assigned', 'ann', 'L1', ?, '[0.25]', NULL, 1, ?)",
                 (ts[0].id, now, now))
    conn.execute("INSERT INTO slots VALUES ('s-open', 'r', ?, 0, 'st1', 'open', NULL, NULL, NULL, '[]', NULL, 0, ?)",
                 (ts[1].id, now))
    queues = [HumanQueue(Store(tmp_path)) for _ in range(2)]  # the second opening finds it migrated
    taken, open_ = queues[0].slot("s-taken"), queues[1].slot("s-open")
    assert (taken.judge, taken.lease, taken.beliefs, taken.reveal) == ("ann", "L1", (0.25,), True)
    assert taken.order == _legacy_order("s-taken") and open_.order in (0, 1) and open_.status == "open"
    assert [j.name for j in queues[0].judges()] == ["ann"]
    v = queues[0].submit("s-taken", "ann", "L1", 0.9, "still works")
    assert v.beliefs == (0.25,) and queues[1].slot("s-taken").status == "done"
