"""The store: WAL mode, idempotent writes, status updates, concurrent writers, schema refusal."""

import json
import sqlite3
import threading

import pytest

from debate.records import RunInfo, SchemaError, Seat, Speech, Transcript, Verdict, to_json
from debate.store import DB_NAME, Store, StoreError


def _transcripts(run: str = "r", n: int = 3) -> list[Transcript]:
    seats = (Seat("debater_a", "x", 0), Seat("debater_b", "y", 1))
    return [Transcript(f"t{i}", run, "m", f"q{i}", "debate", seats) for i in range(n)]


def _speeches(tid: str, n: int = 2) -> list[Speech]:
    return [Speech(tid, i, i // 2, ("debater_a", "debater_b")[i % 2], i % 2, "x", f"speech {i}") for i in range(n)]


def _verdict(i: int, run: str = "r", judge: str = "j") -> Verdict:
    return Verdict(f"v{judge}{i}", run, f"t{i}", f"q{i}", judge, 0.7, (0.8, 0.6), 0, raw="{}")


def _rows(store: Store, table: str) -> int:
    with sqlite3.connect(store.path) as c:
        return c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_wal_mode(tmp_path) -> None:
    store = Store(tmp_path)
    assert store.path == tmp_path / DB_NAME and store.path.exists()
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    with sqlite3.connect(store.path) as c:  # persistent: a fresh connection sees WAL too
        assert c.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


def test_writes_are_idempotent(tmp_path) -> None:
    store = Store(tmp_path)
    ts = _transcripts()
    for _ in range(2):
        store.add_transcripts(ts)
        store.add_speeches(_speeches("t0", 3) + _speeches("t1", 2))
        store.add_verdicts([_verdict(i) for i in range(3)])
        store.add_run(RunInfo("r", "tournament", "name: r\n", 1.0))
    assert _rows(store, "transcripts") == 3 and store.count("transcripts", "r") == 3
    assert _rows(store, "speeches") == 5
    assert _rows(store, "verdicts") == 3 and store.count("verdicts", "r") == 3
    assert _rows(store, "runs") == 1
    got = store.transcripts("r")
    assert [t.id for t in got] == ["t0", "t1", "t2"]
    assert [len(t.speeches) for t in got] == [3, 2, 0]
    assert [s.index for s in got[0].speeches] == [0, 1, 2]
    assert got[0].speeches[2].text == "speech 2"


def test_reopened_store_sees_data(tmp_path) -> None:
    Store(tmp_path).add_transcripts(_transcripts())
    assert Store(tmp_path).count("transcripts", "r") == 3


def test_update_transcript_changes_status(tmp_path) -> None:
    store = Store(tmp_path)
    ts = _transcripts()
    store.add_transcripts(ts)
    from dataclasses import replace

    store.update_transcript(replace(ts[1], status="failed", error="boom", warnings=("w1",)))
    store.update_transcript(replace(ts[2], status="complete"))
    by_id = {t.id: t for t in store.transcripts("r")}
    assert by_id["t0"].status == "running"
    assert by_id["t1"].status == "failed" and by_id["t1"].error == "boom" and by_id["t1"].warnings == ("w1",)
    assert by_id["t2"].status == "complete"
    assert [t.id for t in store.transcripts("r", status="failed")] == ["t1"]
    with sqlite3.connect(store.path) as c:
        assert c.execute("SELECT status, error FROM transcripts WHERE id='t1'").fetchone() == ("failed", "boom")


def test_header_json_has_no_speeches(tmp_path) -> None:
    store = Store(tmp_path)
    from dataclasses import replace

    t = replace(_transcripts(n=1)[0], speeches=tuple(_speeches("t0", 2)))
    store.add_transcripts([t])
    with sqlite3.connect(store.path) as c:
        assert json.loads(c.execute("SELECT json FROM transcripts").fetchone()[0])["speeches"] == []


def test_runs_are_separate(tmp_path) -> None:
    store = Store(tmp_path)
    store.add_transcripts(_transcripts("r1", 2) + [Transcript("other", "r2", "m", "q", "blind", ())])
    store.add_verdicts([_verdict(0, "r1"), _verdict(1, "r2")])
    assert store.count("transcripts", "r1") == 2 and store.count("transcripts", "r2") == 1
    assert [v.run for v in store.verdicts("r2")] == ["r2"]
    assert store.verdicts("r1", judge="nobody") == []


def test_missing_run_lists_stored_runs(tmp_path) -> None:
    store = Store(tmp_path)
    with pytest.raises(StoreError, match="none"):
        store.run("missing")
    store.add_run(RunInfo("alpha", "tournament", "x: 1\n", 1.0))
    store.add_run(RunInfo("beta", "selfplay", "x: 2\n", 2.0))
    with pytest.raises(StoreError, match="missing") as err:
        store.run("missing")
    assert "alpha" in str(err.value) and "beta" in str(err.value)
    assert store.run("beta").kind == "selfplay"


def test_count_refuses_unknown_table(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown table"):
        Store(tmp_path).count("runs; DROP TABLE runs", "r")


def _in_threads(n: int, work) -> list[BaseException]:
    """Run work(k, barrier) in n threads that start together; the exceptions they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(k: int) -> None:
        try:
            work(k, barrier)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_concurrent_writers_lose_nothing(tmp_path) -> None:
    Store(tmp_path)  # create the schema

    def work(k: int, barrier: threading.Barrier) -> None:
        store = Store(tmp_path)
        barrier.wait()
        for i in range(50):
            store.add_verdicts([_verdict(i, judge=f"j{k}")])
        store.close()

    assert _in_threads(4, work) == []
    store = Store(tmp_path)
    assert store.count("verdicts", "r") == 200
    assert len({v.id for v in store.verdicts("r")}) == 200
    assert len(store.verdicts("r", judge="j3")) == 50


def test_concurrent_stores_opened_on_fresh_folder(tmp_path) -> None:
    """Two processes' worth of writers (runner + browser) may open a fresh results folder at once.
    Repeated on 30 fresh folders: the WAL switch raced in ~6% of single tries before it was retried."""
    for trial in range(30):
        folder = tmp_path / f"fresh{trial}"

        def work(k: int, barrier: threading.Barrier) -> None:
            barrier.wait()
            store = Store(folder)
            store.add_verdicts([_verdict(i, judge=f"j{k}") for i in range(10)])
            store.close()

        errors = _in_threads(4, work)
        assert errors == [], (trial, errors)
        assert Store(folder).count("verdicts", "r") == 40


def test_newer_verdict_schema_is_refused(tmp_path) -> None:
    store = Store(tmp_path)
    store.add_verdicts([_verdict(0)])
    data = json.loads(to_json(_verdict(1)))
    data["schema_version"] = 99
    with sqlite3.connect(store.path) as c:
        c.execute(
            "INSERT INTO verdicts (id, run, transcript_id, judge, p_answer0, winner, error, json, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("v99", "r", "t1", "j", 0.7, 0, None, json.dumps(data), 0.0),
        )
    with pytest.raises(SchemaError, match="newer"):
        store.verdicts("r")


def test_newer_speech_schema_is_refused(tmp_path) -> None:
    store = Store(tmp_path)
    store.add_transcripts(_transcripts(n=1))
    data = json.loads(to_json(_speeches("t0", 1)[0]))
    data["schema_version"] = 2
    with sqlite3.connect(store.path) as c:
        c.execute("INSERT INTO speeches (transcript_id, idx, json, created) VALUES ('t0', 5, ?, 0)", (json.dumps(data),))
    with pytest.raises(SchemaError):
        store.transcripts("r")


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as c:
        return {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_read_only_store_creates_nothing_and_refuses_writes(tmp_path) -> None:
    from judges.human_queue import HumanQueue

    with pytest.raises(StoreError, match="no results database at .*debate.sqlite"):
        Store(tmp_path / "missing", read_only=True)
    assert not (tmp_path / "missing").exists()
    Store(tmp_path).add_transcripts(_transcripts())
    before = _tables(tmp_path / DB_NAME)
    ro = Store(tmp_path, read_only=True)
    assert ro.count("transcripts", "r") == 3
    assert HumanQueue(ro).queue_table() == []  # no queue tables: no queue, and none created
    assert _tables(tmp_path / DB_NAME) == before and "slots" not in before
    with pytest.raises(StoreError, match="read-only"):
        ro.add_verdicts([_verdict(0)])
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # SQLite itself refuses a raw write
        ro.query("DELETE FROM transcripts")
    assert Store(tmp_path).count("transcripts", "r") == 3


def test_transaction_commits_or_rolls_back_with_the_store_writes_inside_it(tmp_path) -> None:
    store = Store(tmp_path)
    store.ensure_tables("CREATE TABLE IF NOT EXISTS extra (k TEXT PRIMARY KEY);")
    assert store.has_table("extra") and not store.has_table("nope")
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction() as conn:
            conn.execute("INSERT INTO extra VALUES ('a')")
            store.add_verdicts([_verdict(0)])  # joins the open transaction
            raise RuntimeError("boom")
    assert store.query("SELECT COUNT(*) FROM extra") == [(0,)] and store.verdicts("r") == []
    with store.transaction() as conn:
        conn.execute("INSERT INTO extra VALUES ('b')")
        with store.transaction():  # nested: part of the outer one
            store.add_verdicts([_verdict(1)])
    assert store.query_one("SELECT k FROM extra") == ("b",) and [v.id for v in store.verdicts("r")] == ["vj1"]


def test_transcripts_by_status_read_only_that_statuses_speeches(tmp_path) -> None:
    from dataclasses import replace

    store = Store(tmp_path)
    t0, t1 = _transcripts(n=2)
    store.add_transcripts([t0, t1])
    store.update_transcript(replace(t1, status="complete"))
    store.add_speeches(_speeches("t0", 2))
    # a complete transcript's speech no reader can parse: a read of running transcripts must never load it
    store._conn().execute("INSERT INTO speeches (transcript_id, idx, json, created) VALUES ('t1', 0, 'not json', 0)")
    (running,) = store.transcripts("r", status="running")
    assert running.id == "t0" and [s.text for s in running.speeches] == ["speech 0", "speech 1"]
    with pytest.raises(ValueError):
        store.transcripts("r", status="complete")


def test_training_metrics_are_stored_as_strict_json(tmp_path) -> None:
    """A rate with nothing to count is NaN in Python; stored as null, since NaN is not JSON and SQLite's
    json_extract refused every row that held one (run long19's)."""
    import math

    import numpy as np

    from debate.training.iterations import iteration_rows, record_iteration

    store = Store(tmp_path)
    record_iteration(store, "r", 0, {"versus_win_rate": math.nan, "kl": np.float32(0.25), "units": np.int64(3),
                                     "by_side": [math.inf, 1.0], "skipped": None, "note": "ok"})
    with sqlite3.connect(store.path) as c:
        (text,) = c.execute("SELECT metrics FROM train_iterations").fetchone()
        assert c.execute("SELECT json_extract(metrics, '$.kl') FROM train_iterations").fetchone() == (0.25,)

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    json.loads(text, parse_constant=refuse)
    (row,) = iteration_rows(store, "r")
    assert row == {"iteration": 0, "versus_win_rate": None, "kl": 0.25, "units": 3, "by_side": [None, 1.0],
                   "skipped": None, "note": "ok"}
