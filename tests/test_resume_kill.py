"""A run killed with SIGKILL midway resumes from the store: it generates only the speeches that are missing,
changes none that are stored, and ends with the transcripts of an uninterrupted run with the same seed."""

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

from arenas.tournament import resume_config, run_tournament
from debate.actors import LocalPolicy, PolicyServer
from debate.configs import PolicyConfig, load_tournament
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


class CountingPolicy(LocalPolicy):
    """The tiny model in this process, counting the speeches it is asked to generate."""

    def __init__(self, server: PolicyServer) -> None:
        super().__init__(server)
        self.generated = 0

    def submit_generate(self, requests):
        self.generated += len(requests)
        return super().submit_generate(requests)


def test_kill_midway_then_resume(tiny_model_dir, tiny_backend, tiny_policy, tmp_path):
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

    # resume in this process, with a policy that counts what it generates (and batches of 32, not 4:
    # with per-row seeds the batch size must not change a speech)
    policy = CountingPolicy(PolicyServer(PolicyConfig("p", model="unused"), backend=tiny_backend))
    stored = Store(results)
    result = run_tournament(resume_config(stored, "k"), run="k", resume=True, progress=False,
                            policies={"p": policy, "j": tiny_policy})
    after = _speech_rows(db)
    assert len(after) == expected_speeches
    assert policy.generated == expected_speeches - len(before), "resume generated speeches that were stored"
    assert all(after[k] == v for k, v in before.items()), "a stored speech changed on resume"
    ts = stored.transcripts("k")
    assert len(ts) == 24 * 2 + 24 and all(t.status == "complete" for t in ts)
    verdicts = stored.verdicts("k")
    assert len(verdicts) == len(ts) == len({v.transcript_id for v in verdicts}) == result.judged

    # the same run, uninterrupted, in another results folder: the same speeches, word for word
    data["results"] = str(tmp_path / "uninterrupted")
    fresh = CountingPolicy(PolicyServer(PolicyConfig("p", model="unused"), backend=tiny_backend))
    run_tournament(load_tournament(data), run="k", progress=False, policies={"p": fresh, "j": tiny_policy})
    assert fresh.generated == expected_speeches
    whole = {t.id: [s.text for s in t.speeches] for t in Store(tmp_path / "uninterrupted").transcripts("k")}
    assert whole == {t.id: [s.text for s in t.speeches] for t in ts}, "a resumed run differs from an uninterrupted one"
