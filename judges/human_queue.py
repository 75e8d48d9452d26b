"""Human judging: judges with hashed access tokens, and an atomic queue of judging slots in the store.

A slot is one judgement wanted of one transcript (a run can ask for several judges per debate). A judge
takes the next open slot atomically, never one of a story they have already read (they must not have
seen the passage), and never two slots of the same debate. A slot taken but abandoned returns to the
queue after a timeout. Beliefs after each turn are stored as they are given; the final verdict goes
into the verdicts table in the same transaction that closes the slot, so double submissions and stale
pages are refused without changing anything stored. Which answer a slot shows first is drawn at random
when it is queued and stored with it, so the letter a judge sees says nothing to anyone without the
database.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from debate.records import Transcript, Verdict, stable_id
from debate.store import Store
from judges.reasons import normalise_reason, reason_problem

HUMAN_JUDGE = "human"
SLOT_TIMEOUT_S = 30 * 60

SCHEMA = """
CREATE TABLE IF NOT EXISTS judges (
  name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
  created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slots (
  id TEXT PRIMARY KEY, run TEXT NOT NULL, transcript_id TEXT NOT NULL, k INTEGER NOT NULL, story TEXT NOT NULL,
  status TEXT NOT NULL, judge TEXT, lease TEXT, assigned REAL, beliefs TEXT NOT NULL DEFAULT '[]',
  verdict_id TEXT, reveal INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, shown_order INTEGER);
CREATE INDEX IF NOT EXISTS slots_status ON slots (status, created);
CREATE TABLE IF NOT EXISTS seen (judge TEXT NOT NULL, story TEXT NOT NULL, PRIMARY KEY (judge, story));
"""


class QueueError(ValueError):
    """A refused action: the message says why; nothing stored was changed."""


class AnsweredElsewhere(QueueError):
    """The same judge, holding the same assignment, already gave this answer (another tab, a repeated
    click): the first answer is kept."""


@dataclass(frozen=True)
class JudgeAccount:
    name: str
    admin: bool
    revoked: bool
    created: float


@dataclass(frozen=True)
class Slot:
    id: str
    run: str
    transcript_id: str
    k: int
    status: str  # open, assigned, done
    judge: Optional[str]
    lease: Optional[str]  # changes on every assignment: a page holding an old lease is stale
    beliefs: tuple[float, ...]
    verdict_id: Optional[str]
    reveal: bool
    order: int  # which answer is displayed as A: 0 shows answer 0 first, 1 shows answer 1 first


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def story_key(passage: Optional[str], question_id: str) -> str:
    """Debates on the same story share a key (a judge who read one must not judge another)."""
    return hashlib.sha256((passage or f"question:{question_id}").encode("utf-8")).hexdigest()[:16]


def _legacy_order(slot_id: str) -> int:
    """The display order slots had before it was stored: a hash of the slot id (derivable by anyone)."""
    return hashlib.sha256(f"order:{slot_id}".encode("utf-8")).digest()[0] % 2


def _add_shown_order(store: Store) -> None:
    """Migrate a slots table from before `shown_order`: add the column; slots already taken keep the
    order their judge saw (the old hash), slots nobody has taken get a random one."""
    def missing() -> bool:
        return "shown_order" not in {row[1] for row in store.query("PRAGMA table_info(slots)")}

    if not missing():
        return
    with store.transaction() as conn:
        if missing():  # another process may have migrated while this one waited for the lock
            conn.execute("ALTER TABLE slots ADD COLUMN shown_order INTEGER")
            rows = conn.execute("SELECT id, status FROM slots").fetchall()
            conn.executemany("UPDATE slots SET shown_order = ? WHERE id = ?",
                             [(secrets.randbelow(2) if status == "open" else _legacy_order(i), i) for i, status in rows])


class HumanQueue:
    """Judges and judging slots on a store's database (through the store's public API only).

    On a read-only store nothing is created or migrated: `queue_table` reads what exists (no slots
    table: no queue).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        if not store.read_only:
            store.ensure_tables(SCHEMA)
            _add_shown_order(store)

    # judges
    def add_judge(self, name: str, admin: bool = False) -> str:
        """Register a judge (or an admin) and return their one-time token; only its hash is stored."""
        name = name.strip()
        if not name or len(name) > 64:
            raise QueueError("a judge name must be 1-64 characters")
        token = secrets.token_urlsafe(24)
        with self.store.transaction() as conn:
            if conn.execute("SELECT 1 FROM judges WHERE name = ?", (name,)).fetchone():
                raise QueueError(f"a judge named {name!r} exists; revoke it or choose another name")
            conn.execute("INSERT INTO judges (name, token_hash, admin, created) VALUES (?, ?, ?, ?)",
                         (name, hash_token(token), int(admin), time.time()))
        return token

    def judges(self) -> list[JudgeAccount]:
        rows = self.store.query("SELECT name, admin, revoked, created FROM judges ORDER BY created")
        return [JudgeAccount(n, bool(a), bool(r), c) for n, a, r, c in rows]

    def revoke(self, name: str) -> None:
        with self.store.transaction() as conn:
            if conn.execute("UPDATE judges SET revoked = 1 WHERE name = ?", (name,)).rowcount == 0:
                raise QueueError(f"no judge named {name!r}")
            # their unfinished slots go back to the queue
            conn.execute("UPDATE slots SET status = 'open', judge = NULL, lease = NULL WHERE judge = ? AND status = 'assigned'", (name,))

    def login(self, token: str) -> Optional[JudgeAccount]:
        """The judge a token belongs to, or None for a wrong or revoked token."""
        if not token or len(token) > 200:
            return None
        row = self.store.query_one(
            "SELECT name, admin, revoked, created FROM judges WHERE token_hash = ?", (hash_token(token.strip()),)
        )
        if row is None or row[2]:
            return None
        return JudgeAccount(row[0], bool(row[1]), False, row[3])

    # slots
    def enqueue(self, run: str, transcripts: Sequence[Transcript], judges_per_debate: int = 1, reveal: bool = False) -> int:
        """Add `judges_per_debate` slots for each transcript (idempotent); returns how many are new."""
        questions = self.store.questions(run)
        now = time.time()
        rows = []
        for t in transcripts:
            q = questions[t.question_id]
            for k in range(judges_per_debate):
                rows.append((stable_id("slot", run, t.id, k), run, t.id, k, story_key(q.passage, q.id), now, int(reveal),
                             secrets.randbelow(2)))
        with self.store.transaction() as conn:
            before = conn.execute("SELECT COUNT(*) FROM slots").fetchone()[0]
            conn.executemany(
                "INSERT OR IGNORE INTO slots (id, run, transcript_id, k, story, status, created, reveal, shown_order)"
                " VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?)",
                rows,
            )
            after = conn.execute("SELECT COUNT(*) FROM slots").fetchone()[0]
        return after - before

    def _slot(self, row) -> Slot:
        return Slot(row[0], row[1], row[2], row[3], row[4], row[5], row[6], tuple(json.loads(row[7])), row[8], bool(row[9]),
                    int(row[10]))

    _COLS = "id, run, transcript_id, k, status, judge, lease, beliefs, verdict_id, reveal, shown_order"

    def current(self, judge: str, now: Optional[float] = None) -> Optional[Slot]:
        """The slot this judge holds and has not finished (and whose lease has not expired), if any."""
        now = now or time.time()
        row = self.store.query_one(
            f"SELECT {self._COLS} FROM slots WHERE judge = ? AND status = 'assigned' AND assigned > ? ORDER BY assigned LIMIT 1",
            (judge, now - SLOT_TIMEOUT_S),
        )
        return self._slot(row) if row else None

    def take(self, judge: str, now: Optional[float] = None, timeout: float = SLOT_TIMEOUT_S) -> Optional[Slot]:
        """Atomically assign the next slot to `judge` (their current one if they hold one)."""
        now = now or time.time()
        with self.store.transaction() as conn:
            if conn.execute("SELECT revoked FROM judges WHERE name = ?", (judge,)).fetchone() in (None, (1,)):
                raise QueueError("unknown or revoked judge")
            held = conn.execute(
                f"SELECT {self._COLS} FROM slots WHERE judge = ? AND status = 'assigned' AND assigned > ? LIMIT 1",
                (judge, now - timeout),
            ).fetchone()
            if held:
                return self._slot(held)
            row = conn.execute(
                f"""SELECT {self._COLS} FROM slots s
                WHERE (s.status = 'open' OR (s.status = 'assigned' AND s.assigned <= ?))
                  AND s.story NOT IN (SELECT story FROM seen WHERE judge = ?)
                ORDER BY s.created, s.k, s.id LIMIT 1""",
                (now - timeout, judge),
            ).fetchone()
            if row is None:
                return None
            lease = secrets.token_hex(8)
            conn.execute("UPDATE slots SET status = 'assigned', judge = ?, lease = ?, assigned = ?, beliefs = '[]' WHERE id = ?",
                         (judge, lease, now, row[0]))
            story = conn.execute("SELECT story FROM slots WHERE id = ?", (row[0],)).fetchone()[0]
            conn.execute("INSERT OR IGNORE INTO seen (judge, story) VALUES (?, ?)", (judge, story))  # read once, never again
        return self.slot(row[0])

    def slot(self, slot_id: str) -> Slot:
        row = self.store.query_one(f"SELECT {self._COLS} FROM slots WHERE id = ?", (slot_id,))
        if row is None:
            raise QueueError(f"no judging slot {slot_id}")
        return self._slot(row)

    def _check(self, conn, slot_id: str, judge: str, lease: str) -> tuple:
        row = conn.execute("SELECT status, judge, lease, beliefs FROM slots WHERE id = ?", (slot_id,)).fetchone()
        if row is None:
            raise QueueError("this debate is not in the judging queue")
        status, holder, current_lease, beliefs = row
        if status == "done" and holder == judge and current_lease == lease:
            raise AnsweredElsewhere("this debate was answered in another tab (or by an earlier click): the verdict given "
                                    "first is kept; nothing was changed")
        if holder != judge or current_lease != lease or status != "assigned":
            raise QueueError("this page is out of date: the debate was given to another judge after a timeout; load the next debate")
        return json.loads(beliefs)

    def add_belief(self, slot_id: str, judge: str, lease: str, turn: int, p_answer0: float) -> tuple[float, ...]:
        """Store the judge's belief after turn `turn` (in order, once per turn)."""
        _probability(p_answer0)
        with self.store.transaction() as conn:
            beliefs = self._check(conn, slot_id, judge, lease)
            if turn < len(beliefs):
                raise AnsweredElsewhere(f"your belief after turn {turn + 1} was already given (in another tab or by an "
                                        "earlier click): the first one is kept; nothing was changed")
            if turn > len(beliefs):
                raise QueueError(f"the belief after turn {turn + 1} is out of order: give the one after turn "
                                 f"{len(beliefs) + 1} first; nothing was changed")
            beliefs.append(float(p_answer0))
            conn.execute("UPDATE slots SET beliefs = ? WHERE id = ?", (json.dumps(beliefs), slot_id))
        return tuple(beliefs)

    def submit(self, slot_id: str, judge: str, lease: str, p_answer0: float, reason: str, turns_required: int = 0) -> Verdict:
        """The final verdict: stored as a verdict row, closing the slot, in one transaction."""
        _probability(p_answer0)
        if abs(p_answer0 - 0.5) < 1e-9:
            raise QueueError("a final verdict must lean one way: 50/50 is not allowed")
        problem = reason_problem(reason)
        if problem:
            raise QueueError(problem)
        reason = normalise_reason(reason)  # what was counted is what is stored
        with self.store.transaction() as conn:
            beliefs = self._check(conn, slot_id, judge, lease)
            if len(beliefs) < turns_required:
                raise QueueError(f"give your belief after each turn first ({len(beliefs)} of {turns_required})")
            run, t_id, q_id, order = conn.execute(
                "SELECT s.run, s.transcript_id, t.question_id, s.shown_order FROM slots s JOIN transcripts t ON t.id = s.transcript_id"
                " WHERE s.id = ?",
                (slot_id,),
            ).fetchone()
            v = Verdict(
                id=stable_id("verdict", run, t_id, HUMAN_JUDGE, slot_id), run=run, transcript_id=t_id, question_id=q_id,
                judge=HUMAN_JUDGE, p_answer0=float(p_answer0), winner=0 if p_answer0 > 0.5 else 1,
                # the shown order stays with the verdict: position bias of people is measured from it
                raw=json.dumps({"judge_name": judge, "reason": reason, "slot": slot_id, "shown_order": order}),
                beliefs=tuple(beliefs),
            )
            self.store.add_verdicts([v])  # joins this transaction: the verdict and the closed slot, or neither
            conn.execute("UPDATE slots SET status = 'done', verdict_id = ? WHERE id = ?", (v.id, slot_id))
        return v

    def queue_table(self, run: Optional[str] = None, now: Optional[float] = None) -> list[dict]:
        """Slot counts per run: open, assigned (in progress), expired (back in the queue), done."""
        now = now or time.time()
        sql = "SELECT run, status, assigned FROM slots" + (" WHERE run = ?" if run else "")
        counts: dict[str, dict] = {}
        if not self.store.has_table("slots"):
            return []  # nothing was ever queued in this database (a read-only store creates no table)
        for r, status, assigned in self.store.query(sql, (run,) if run else ()):
            c = counts.setdefault(r, {"run": r, "open": 0, "in_progress": 0, "expired": 0, "done": 0})
            if status == "assigned":
                c["in_progress" if assigned > now - SLOT_TIMEOUT_S else "expired"] += 1
            else:
                c[status] += 1
        return list(counts.values())


def _probability(p: float) -> None:
    if not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0 or p != p:
        raise QueueError(f"a probability must be between 0 and 1, got {p!r}")
