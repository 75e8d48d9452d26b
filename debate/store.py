"""The store: one SQLite database (WAL mode) per results folder; every record is written as it exists.

Writes are idempotent: ids are deterministic and rows are inserted with `INSERT OR IGNORE`, so a
resumed run never writes a row twice. WAL lets the tournament runner and a browser server write at once.
Modules that keep tables of their own in the same database (the human judging queue) use the public
part only: `ensure_tables`, `transaction`, `query`, `query_one`, `has_table`. A store opened with
`read_only=True` (the read verbs: report, export) creates nothing and refuses every write.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from debate.records import Question, RunInfo, Speech, Transcript, Verdict, from_json, to_json

DB_NAME = "debate.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  name TEXT PRIMARY KEY, kind TEXT NOT NULL, config TEXT NOT NULL, created REAL NOT NULL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS questions (
  run TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (run, id));
CREATE TABLE IF NOT EXISTS transcripts (
  id TEXT PRIMARY KEY, run TEXT NOT NULL, match TEXT NOT NULL, question_id TEXT NOT NULL,
  protocol TEXT NOT NULL, status TEXT NOT NULL, error TEXT, json TEXT NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS transcripts_run ON transcripts (run);
CREATE TABLE IF NOT EXISTS speeches (
  transcript_id TEXT NOT NULL, idx INTEGER NOT NULL, json TEXT NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (transcript_id, idx));
CREATE TABLE IF NOT EXISTS verdicts (
  id TEXT PRIMARY KEY, run TEXT NOT NULL, transcript_id TEXT NOT NULL, judge TEXT NOT NULL,
  p_answer0 REAL, winner INTEGER, error TEXT, json TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS verdicts_run ON verdicts (run);
CREATE TABLE IF NOT EXISTS transcript_failures (
  transcript_id TEXT NOT NULL, attempt INTEGER NOT NULL, run TEXT NOT NULL, error TEXT, n_speeches INTEGER NOT NULL,
  json TEXT NOT NULL, failed REAL NOT NULL, retried REAL NOT NULL, PRIMARY KEY (transcript_id, attempt));
CREATE TABLE IF NOT EXISTS verdict_failures (
  verdict_id TEXT NOT NULL, attempt INTEGER NOT NULL, run TEXT NOT NULL, transcript_id TEXT NOT NULL, judge TEXT NOT NULL,
  error TEXT, json TEXT NOT NULL, failed REAL NOT NULL, retried REAL NOT NULL, PRIMARY KEY (verdict_id, attempt));
CREATE TABLE IF NOT EXISTS placements (
  run TEXT NOT NULL, started REAL NOT NULL, policy TEXT NOT NULL, node_id TEXT, node_ip TEXT, json TEXT NOT NULL,
  PRIMARY KEY (run, started, policy));
"""


def _switch_to_wal(conn: sqlite3.Connection, seconds: float = 60.0) -> None:
    """`PRAGMA journal_mode=WAL`, retried: on a fresh file opened by several writers at once the switch
    can answer "database is locked" at once, without waiting on the busy timeout (seen here in ~6% of
    runs of four threads opening a new folder together)."""
    deadline, delay = time.monotonic() + seconds, 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


class StoreError(RuntimeError):
    pass


class Store:
    """A results folder's database. Safe to share between threads (one connection per thread).

    `read_only=True` opens an existing database without creating the folder, the file or any table
    (a missing one is a StoreError naming it) and refuses writes.
    """

    def __init__(self, folder: str | Path, read_only: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.read_only = read_only
        self._local = threading.local()
        if read_only:
            if not self.path.is_file():
                raise StoreError(f"no results database at {self.path}: a read creates nothing; give the --results "
                                 f"folder a tournament or import wrote to")
            self._conn()
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ensure_tables(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.read_only:  # mode=rw: never creates the file; query_only: refuses writes in SQLite itself
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True, timeout=60, isolation_level=None)
                conn.execute("PRAGMA query_only=ON")
            else:
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                _switch_to_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.path} was opened read-only (a read verb); open Store(folder) to write")

    # public API for modules that keep their own tables in this database
    def ensure_tables(self, ddl: str) -> None:
        """Run `CREATE ... IF NOT EXISTS` statements (idempotent), e.g. the human queue's tables."""
        self._writable()
        self._conn().executescript(ddl)

    def has_table(self, name: str) -> bool:
        return bool(self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """Rows of one read statement, on this thread's connection (inside its transaction, if one is open)."""
        return self._conn().execute(sql, tuple(args)).fetchall()

    def query_one(self, sql: str, args: Sequence[Any] = ()) -> Optional[tuple]:
        """The first row of one read statement, or None."""
        return self._conn().execute(sql, tuple(args)).fetchone()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: the write lock is taken first, so reads inside it are not
        stale): committed when the block ends, rolled back when it raises. Store writes made inside the
        block (`add_verdicts`, ...) join it; a nested `transaction()` joins the outer one."""
        self._writable()
        conn = self._conn()
        if getattr(self._local, "in_transaction", False):
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        self._local.in_transaction = True
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            self._local.in_transaction = False

    def _write(self, sql: str, rows: Iterable[tuple]) -> None:
        self._write_many([(sql, list(rows))])

    def _write_many(self, batches: list[tuple[str, list[tuple]]]) -> None:
        """Several inserts in one transaction: all of them are stored, or none."""
        with self.transaction() as conn:
            for sql, rows in batches:
                if rows:
                    conn.executemany(sql, rows)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # runs
    def add_run(self, run: RunInfo) -> None:
        self._write(
            "INSERT OR IGNORE INTO runs (name, kind, config, created, json) VALUES (?, ?, ?, ?, ?)",
            [(run.name, run.kind, run.config, run.created, to_json(run))],
        )

    def set_run_config(self, name: str, config: str) -> None:
        """Replace a run's stored configuration (with what `auto` settings resolved to once policies started)."""
        info = replace(self.run(name), config=config)
        self._write("UPDATE runs SET config = ?, json = ? WHERE name = ?", [(config, to_json(info), name)])

    def run(self, name: str) -> RunInfo:
        row = self._conn().execute("SELECT json FROM runs WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = ", ".join(r.name for r in self.runs()) or "none"
            raise StoreError(f"no run named {name!r} in {self.path}; runs stored: {known}")
        return from_json(RunInfo, row[0])

    def runs(self) -> list[RunInfo]:
        rows = self._conn().execute("SELECT json FROM runs ORDER BY created").fetchall()
        return [from_json(RunInfo, r[0]) for r in rows]

    # questions
    def add_questions(self, run: str, questions: Iterable[Question]) -> None:
        self._write(_Q_SQL, [(run, q.id, to_json(q)) for q in questions])

    def questions(self, run: str) -> dict[str, Question]:
        rows = self._conn().execute("SELECT json FROM questions WHERE run = ?", (run,)).fetchall()
        return {q.id: q for q in (from_json(Question, r[0]) for r in rows)}

    # transcripts and speeches
    def add_transcripts(self, transcripts: Iterable[Transcript]) -> None:
        self._write(_T_SQL, _t_rows(transcripts))

    def update_transcript(self, t: Transcript) -> None:
        """Record a transcript's status (complete, failed), error and warnings."""
        self._write(
            "UPDATE transcripts SET status = ?, error = ?, json = ?, updated = ? WHERE id = ?",
            [(t.status, t.error, to_json(_header(t)), time.time(), t.id)],
        )

    def add_speeches(self, speeches: Iterable[Speech]) -> None:
        self._write(_S_SQL, _s_rows(speeches))

    def transcripts(self, run: str, status: Optional[str] = None, speeches: bool = True) -> list[Transcript]:
        """The run's transcripts with their speeches attached (`speeches=False`: headers only, the speeches
        not read), in a stable order."""
        sql = "SELECT json FROM transcripts WHERE run = ?" + (" AND status = ?" if status else "") + " ORDER BY id"
        args = (run, status) if status else (run,)
        headers = [from_json(Transcript, r[0]) for r in self._conn().execute(sql, args).fetchall()]
        if not speeches:
            return headers
        by_id = self._speeches_by_transcript(run, status)
        return [_with_speeches(t, by_id.get(t.id, [])) for t in headers]

    def transcript(self, transcript_id: str) -> Optional[Transcript]:
        """One transcript with its speeches, without reading the whole run; None if absent."""
        conn = self._conn()
        row = conn.execute("SELECT json FROM transcripts WHERE id = ?", (transcript_id,)).fetchone()
        if row is None:
            return None
        rows = conn.execute("SELECT json FROM speeches WHERE transcript_id = ? ORDER BY idx", (transcript_id,)).fetchall()
        return _with_speeches(from_json(Transcript, row[0]), [from_json(Speech, r[0]) for r in rows])

    def question(self, run: str, question_id: str) -> Optional[Question]:
        row = self._conn().execute("SELECT json FROM questions WHERE run = ? AND id = ?", (run, question_id)).fetchone()
        return from_json(Question, row[0]) if row else None

    def _speeches_by_transcript(self, run: str, status: Optional[str] = None) -> dict[str, list[Speech]]:
        """Speeches of the run's transcripts (of one status only, when given: filtered before they are read)."""
        sql = ("SELECT s.json FROM speeches s JOIN transcripts t ON s.transcript_id = t.id WHERE t.run = ?"
               + (" AND t.status = ?" if status else "") + " ORDER BY s.transcript_id, s.idx")
        rows = self._conn().execute(sql, (run, status) if status else (run,)).fetchall()
        out: dict[str, list[Speech]] = {}
        for r in rows:
            s = from_json(Speech, r[0])
            out.setdefault(s.transcript_id, []).append(s)
        return out

    # verdicts
    def add_verdicts(self, verdicts: Iterable[Verdict]) -> None:
        self._write(_V_SQL, _v_rows(verdicts))

    def write_all(self, run: str, questions=(), transcripts=(), speeches=(), verdicts=()) -> None:
        """Questions, transcripts, speeches and verdicts in one transaction: a unit is never half-written."""
        self._write_many([
            (_Q_SQL, [(run, q.id, to_json(q)) for q in questions]),
            (_T_SQL, _t_rows(transcripts)),
            (_S_SQL, _s_rows(speeches)),
            (_V_SQL, _v_rows(verdicts)),
        ])

    def verdicts(self, run: str, judge: Optional[str] = None) -> list[Verdict]:
        sql = "SELECT json FROM verdicts WHERE run = ?" + (" AND judge = ?" if judge else "") + " ORDER BY id"
        args = (run, judge) if judge else (run,)
        return [from_json(Verdict, r[0]) for r in self._conn().execute(sql, args).fetchall()]

    # retries: a failed row is moved to a history table and its live row reopened, so the live tables keep
    # one row per debate and verdict (what reports count) and every failed attempt stays queryable
    def reopen_failed(self, run: str, judge: Optional[str] = None) -> tuple[int, int]:
        """Reopen the run's failed transcripts (status back to running, their stored speeches kept, so play
        continues from the failed turn) and, with `judge`, delete that judge's verdicts whose model call failed
        (`judge_call_failed`) so they are judged again; each failure is first copied to `transcript_failures` /
        `verdict_failures` with its attempt number. One transaction; returns (transcripts, verdicts) reopened."""
        now = time.time()
        with self.transaction() as conn:
            failed = [from_json(Transcript, r[0]) for r in conn.execute(
                "SELECT json FROM transcripts WHERE run = ? AND status = 'failed' ORDER BY id", (run,)).fetchall()]
            for t in failed:
                n = conn.execute("SELECT COUNT(*) FROM speeches WHERE transcript_id = ?", (t.id,)).fetchone()[0]
                updated = conn.execute("SELECT updated FROM transcripts WHERE id = ?", (t.id,)).fetchone()[0]
                conn.execute("INSERT INTO transcript_failures (transcript_id, attempt, run, error, n_speeches, json, failed, "
                             "retried) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (t.id, self._attempt(conn, "transcript_failures", "transcript_id", t.id), run, t.error, n,
                              to_json(t), updated, now))
                reopened = replace(t, status="running", error=None)
                conn.execute("UPDATE transcripts SET status = 'running', error = NULL, json = ?, updated = ? WHERE id = ?",
                             (to_json(_header(reopened)), now, t.id))
            rows = [] if judge is None else conn.execute(
                "SELECT json, created FROM verdicts WHERE run = ? AND judge = ? AND winner IS NULL ORDER BY id", (run, judge)).fetchall()
            calls = [(v, created) for v, created in ((from_json(Verdict, r[0]), r[1]) for r in rows) if judge_call_failed(v)]
            for v, created in calls:
                conn.execute("INSERT INTO verdict_failures (verdict_id, attempt, run, transcript_id, judge, error, json, failed, "
                             "retried) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (v.id, self._attempt(conn, "verdict_failures", "verdict_id", v.id), run, v.transcript_id, v.judge,
                              v.error, to_json(v), created, now))
                conn.execute("DELETE FROM verdicts WHERE id = ?", (v.id,))
        return len(failed), len(calls)

    @staticmethod
    def _attempt(conn: sqlite3.Connection, table: str, key: str, value: str) -> int:
        return conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {key} = ?", (value,)).fetchone()[0] + 1

    def failures(self, run: str) -> tuple[list[dict], list[dict]]:
        """The run's failed attempts that were retried: (transcripts, verdicts), each a dict of the history row
        (id, attempt, error, failed and retried times; `n_speeches` stored when a transcript failed)."""
        if not self.has_table("transcript_failures"):  # a read-only store written before retries existed
            return [], []
        ts = self.query("SELECT transcript_id, attempt, error, n_speeches, failed, retried FROM transcript_failures "
                        "WHERE run = ? ORDER BY transcript_id, attempt", (run,))
        vs = self.query("SELECT verdict_id, attempt, transcript_id, judge, error, failed, retried FROM verdict_failures "
                        "WHERE run = ? ORDER BY verdict_id, attempt", (run,))
        return ([dict(id=r[0], attempt=r[1], error=r[2], n_speeches=r[3], failed=r[4], retried=r[5]) for r in ts],
                [dict(id=r[0], attempt=r[1], transcript_id=r[2], judge=r[3], error=r[4], failed=r[5], retried=r[6]) for r in vs])

    # where each policy ran (one row per policy per call of the run: a resumed run may land elsewhere)
    def add_placements(self, run: str, started: float, infos: dict[str, dict]) -> None:
        self._write("INSERT OR IGNORE INTO placements (run, started, policy, node_id, node_ip, json) VALUES (?, ?, ?, ?, ?, ?)",
                    [(run, started, name, i.get("node_id"), i.get("node_ip"), json.dumps(i, sort_keys=True))
                     for name, i in infos.items()])

    def placements(self, run: str) -> list[dict]:
        """Every recorded placement of the run's policies, oldest first: the policy's `info()` plus `started`."""
        if not self.has_table("placements"):
            return []
        rows = self.query("SELECT started, policy, json FROM placements WHERE run = ? ORDER BY started, policy", (run,))
        return [dict(json.loads(r[2]), policy=r[1], started=r[0]) for r in rows]

    def count(self, table: str, run: str) -> int:
        if table not in ("transcripts", "verdicts", "questions"):
            raise ValueError(f"unknown table {table!r}")
        return self._conn().execute(f"SELECT COUNT(*) FROM {table} WHERE run = ?", (run,)).fetchone()[0]


_Q_SQL = "INSERT OR IGNORE INTO questions (run, id, json) VALUES (?, ?, ?)"
_T_SQL = (
    "INSERT OR IGNORE INTO transcripts (id, run, match, question_id, protocol, status, error, json, updated)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_S_SQL = "INSERT OR IGNORE INTO speeches (transcript_id, idx, json, created) VALUES (?, ?, ?, ?)"
_V_SQL = (
    "INSERT OR IGNORE INTO verdicts (id, run, transcript_id, judge, p_answer0, winner, error, json, created)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def judge_call_failed(v: Verdict) -> bool:
    """A failed verdict whose model call failed (the whole call raised: no raw output; or the backend gave a row an
    error: a timeout, an HTTP error): worth asking again. A judge that answered without a usable answer (letters
    without probability mass, exactly 0.5) is a measured answer, kept: asked again, it says the same."""
    if v.p_answer0 is not None or not v.error:
        return False
    if not v.raw:
        return True
    try:
        raw = json.loads(v.raw)
    except ValueError:
        return False
    return isinstance(raw, dict) and any(isinstance(order, dict) and order.get("error") for order in raw.values())


def _t_rows(transcripts: Iterable[Transcript]) -> list[tuple]:
    now = time.time()
    return [(t.id, t.run, t.match, t.question_id, t.protocol, t.status, t.error, to_json(_header(t)), now) for t in transcripts]


def _s_rows(speeches: Iterable[Speech]) -> list[tuple]:
    now = time.time()
    return [(s.transcript_id, s.index, to_json(s), now) for s in speeches]


def _v_rows(verdicts: Iterable[Verdict]) -> list[tuple]:
    now = time.time()
    return [(v.id, v.run, v.transcript_id, v.judge, v.p_answer0, v.winner, v.error, to_json(v), now) for v in verdicts]


def _header(t: Transcript) -> Transcript:
    from dataclasses import replace

    return replace(t, speeches=())


def _with_speeches(t: Transcript, speeches: list[Speech]) -> Transcript:
    from dataclasses import replace

    return replace(t, speeches=tuple(speeches))
