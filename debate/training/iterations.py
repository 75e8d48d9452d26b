"""Per-iteration metrics of a training run, one row each, written after the iteration's checkpoint: a
row marks the iteration complete, so `--resume` continues after the last one with a row. Beside them, the
stages the run started from (its warm start's probe, its reward model's held-out accuracy), so that the run's
report holds them even when the cache that trained them is gone."""

from __future__ import annotations

import json
import math
import numbers
import time
from typing import Any

DDL = """
CREATE TABLE IF NOT EXISTS train_iterations (
  run TEXT NOT NULL, iteration INTEGER NOT NULL, metrics TEXT NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (run, iteration));
CREATE TABLE IF NOT EXISTS train_stages (run TEXT PRIMARY KEY, stages TEXT NOT NULL, created REAL NOT NULL);
"""


def record_iteration(store: Any, run: str, iteration: int, metrics: dict) -> None:
    store.ensure_tables(DDL)
    with store.transaction() as conn:
        conn.execute("INSERT OR REPLACE INTO train_iterations (run, iteration, metrics, created) VALUES (?, ?, ?, ?)",
                     (run, iteration, json.dumps(_json_ready(metrics), allow_nan=False), time.time()))


def record_stages(store: Any, run: str, stages: dict) -> None:
    """What the run started from (see `arenas.selfplay.prepare`); a resume writes the same again."""
    store.ensure_tables(DDL)
    with store.transaction() as conn:
        conn.execute("INSERT OR REPLACE INTO train_stages (run, stages, created) VALUES (?, ?, ?)",
                     (run, json.dumps(_json_ready(stages), allow_nan=False), time.time()))


def run_stages(store: Any, run: str) -> dict:
    """The stages a run started from; {} for a run that recorded none (tests, runs before they were recorded)."""
    if not store.has_table("train_stages"):
        return {}
    row = store.query_one("SELECT stages FROM train_stages WHERE run = ?", (run,))
    return json.loads(row[0]) if row else {}


def _json_ready(v: Any) -> Any:
    """Metrics as strict JSON: numbers (numpy's too) as ints and floats, and a rate with nothing to count (NaN) or an
    infinite one as null, since NaN is not JSON and SQLite's json_extract, like other tools, refuses it.
    Readers take None and NaN alike (rows written before this hold NaN, which `json.loads` still reads)."""
    if isinstance(v, dict):
        return {k: _json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_ready(x) for x in v]
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, numbers.Integral):  # numpy's integers as well
        return int(v)
    f = float(v)
    return f if math.isfinite(f) else None


def iteration_rows(store: Any, run: str) -> list[dict]:
    """The run's iterations in order, each {'iteration': k, **metrics}; [] when none is stored."""
    if not store.has_table("train_iterations"):
        return []
    rows = store.query("SELECT iteration, metrics FROM train_iterations WHERE run = ? ORDER BY iteration", (run,))
    return [{"iteration": k, **json.loads(m)} for k, m in rows]


def last_complete(store: Any, run: str) -> int:
    """The last complete iteration (0 is the evaluation before any update), or -1 when none is."""
    rows = iteration_rows(store, run)
    return rows[-1]["iteration"] if rows else -1
