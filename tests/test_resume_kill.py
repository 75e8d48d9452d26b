"""A run killed with SIGKILL midway resumes from the store, losing nothing and writing nothing twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from debate.store import Store
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


def _debate(args: list[str], **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ui.cli", "tournament", *args, "--quiet"]
    return subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _speech_rows(db: Path) -> dict[tuple[str, int], str]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=30) as c:
            return {(t, i): j for t, i, j in c.execute("SELECT transcript_id, idx, json FROM speeches")}
    except sqlite3.OperationalError:
        return {}


def test_kill_midway_then_resume(tiny_model_dir, tmp_path):
    results = tmp_path / "results"
    data = tiny_config(tiny_model_dir, results, n=24, protocols=[{"name": "debate", "rounds": 3}, {"name": "blind"}])
    data["entries"] = [dict(e, max_new_tokens=40) for e in data["entries"]]
    data["policies"] = [dict(p, max_batch=4) for p in data["policies"]]  # smaller batches: more steps to kill between
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(data))
    db = results / "debate.sqlite"

    proc = _debate(["--config", str(config), "--run", "k"])
    deadline = time.time() + 240
    while time.time() < deadline and len(_speech_rows(db)) < 30 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read()}"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray workers, mid-run
    proc.wait()
    before = _speech_rows(db)
    expected_speeches = 24 * 2 * 6  # 24 questions, 2 seatings, 3 rounds of 2 speeches
    assert 30 <= len(before) < expected_speeches

    resumed = _debate(["--resume", "k", "--results", str(results)])
    out, _ = resumed.communicate(timeout=480)
    assert resumed.returncode == 0, out
    after = _speech_rows(db)
    assert len(after) == expected_speeches
    assert all(after[k] == v for k, v in before.items()), "a stored speech changed on resume"
    store = Store(results)
    ts = store.transcripts("k")
    assert len(ts) == 24 * 2 + 24 and all(t.status == "complete" for t in ts)
    verdicts = store.verdicts("k")
    assert len(verdicts) == len(ts) == len({v.transcript_id for v in verdicts})
    assert "leaderboard" in out
