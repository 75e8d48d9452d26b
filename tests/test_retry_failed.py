"""`--retry-failed`: debates and judge calls stored as failed (a server outage) are re-run on resume. Each
failure stays in the store's history tables, the live tables keep one row per debate and verdict (what the
report counts), nothing is written twice, and a second retry with nothing failed does nothing."""

from __future__ import annotations

import hashlib
import math

import pytest

from arenas.report import build_report
from arenas.tournament import resume_config, run_tournament
from debate.actors import LocalPolicy, PolicyServer
from debate.backends.base import GenResult, ScoreResult
from debate.backends.mock import MockBackend, default_letters, default_reply
from debate.configs import PolicyConfig, load_tournament
from debate.store import Store

N_QUESTIONS = 4
SPEECHES = {"debate": 4, "blind": 0}  # 2 rounds of 2 speeches; blind: judge only


class Outage:
    """A switch the doubles read: while on, some model calls fail as a server outage would."""

    def __init__(self) -> None:
        self.on = True


def config(results) -> dict:
    return {
        "name": "retry",
        "questions": {"source": "synthetic", "n": N_QUESTIONS, "seed": 5},
        "policies": [{"name": "p", "backend": "mock"}, {"name": "j", "backend": "mock"}],
        "entries": [{"name": "a", "policy": "p"}, {"name": "b", "policy": "p", "prompt": "assertive"}],
        "judge": {"name": "mock-judge", "policy": "j"},
        "protocols": [{"name": "debate", "rounds": 2}, {"name": "blind"}],
        "results": str(results),
    }


def debater(outage: Outage) -> LocalPolicy:
    """From its second call on, every third row of a batch fails while the outage lasts (its debate is stored
    as failed with the speeches it had)."""

    def reply(request, call, row):
        if outage.on and call >= 1 and row % 3 == 0:
            return GenResult("", 0, False, error="HTTP 503 from the server (test outage)")
        return default_reply(request, call, row)

    return LocalPolicy(PolicyServer(PolicyConfig("p", backend="mock"), backend=MockBackend("p", reply=reply)))


def kind(messages) -> int:
    """A third of the judge prompts get no mass on either letter (0), a third fail in the outage (1)."""
    return int(hashlib.sha256(repr(messages).encode()).hexdigest()[:8], 16) % 3


def no_letters(messages) -> tuple[float, float]:
    """A judge that answered without an answer: a measured failure, not retried."""
    return (0.0, 0.0) if kind(messages) == 0 else default_letters(messages)


class FlakyJudge(LocalPolicy):
    """Some scoring rows get a backend error while the outage lasts, as an HTTP judge's would."""

    def __init__(self, outage: Outage) -> None:
        super().__init__(PolicyServer(PolicyConfig("j", backend="mock"), backend=MockBackend("j", letters=no_letters)))
        self.outage = outage

    def submit_score(self, requests):
        done = super().submit_score(requests)
        if not self.outage.on:
            return done
        results = done.result()
        failed = ScoreResult((-math.inf, -math.inf), (), error="timed out after 120 s (test outage)")
        return type(done)([failed if kind(q.messages) == 1 else r for q, r in zip(requests, results)])


@pytest.fixture
def failed_run(tmp_path):
    outage = Outage()
    cfg = load_tournament(config(tmp_path / "results"))
    policies = {"p": debater(outage), "j": FlakyJudge(outage)}
    first = run_tournament(cfg, run="r", progress=False, policies=policies)
    return first, policies, outage


def speech_keys(store: Store) -> list[tuple[str, int]]:
    return [tuple(r) for r in store.query("SELECT transcript_id, idx FROM speeches")]


def test_retry_completes_what_failed_keeps_history_and_writes_nothing_twice(failed_run, tmp_path):
    first, policies, outage = failed_run
    store = first.store
    before = store.transcripts("r")
    failed = {t.id: t for t in before if t.status == "failed"}
    assert failed and len(failed) < len(before), "the outage should fail some debates, not all"
    assert all("test outage" in t.error for t in failed.values())
    speeches_before = {t.id: len(t.speeches) for t in before}
    assert any(0 < speeches_before[i] < SPEECHES["debate"] for i in failed), "a failed debate keeps its speeches"
    verdicts_before = {v.id: v for v in store.verdicts("r")}
    call_failed = {i for i, v in verdicts_before.items() if v.error and "test outage" in v.raw}
    no_answer = {i: v for i, v in verdicts_before.items() if v.error and "test outage" not in v.raw}
    assert call_failed and no_answer, "the test needs verdicts of both kinds of failure"

    outage.on = False
    backend = policies["p"].backend
    asked_before = sum(len(c) for c in backend.calls)
    result = run_tournament(resume_config(store, "r"), run="r", resume=True, retry_failed=True, progress=False,
                            policies=policies)
    assert result.retried == (len(failed), len(call_failed))

    after = store.transcripts("r")
    assert len(after) == len(before) and all(t.status == "complete" for t in after)
    assert all(len(t.speeches) == SPEECHES[t.protocol] for t in after)
    keys = speech_keys(store)
    assert len(keys) == len(set(keys)) == sum(SPEECHES[t.protocol] for t in after)
    missing = sum(SPEECHES["debate"] - speeches_before[i] for i in failed)
    assert sum(len(c) for c in backend.calls) - asked_before == missing, "the retry generated only the missing speeches"
    for t in before:  # speeches stored before the retry are unchanged
        assert [s.text for s in t.speeches] == [s.text for s in next(a for a in after if a.id == t.id).speeches][: len(t.speeches)]

    verdicts = store.verdicts("r")
    assert len(verdicts) == len({v.transcript_id for v in verdicts}) == len(after), "one verdict per debate"
    by_id = {v.id: v for v in verdicts}
    assert all("test outage" not in by_id[i].raw for i in call_failed)  # judged again, without the outage
    for i, v in no_answer.items():  # the judge's own non-answers are kept as they were
        assert by_id[i] == v

    t_hist, v_hist = store.failures("r")
    assert {h["id"] for h in t_hist} == set(failed) and all(h["attempt"] == 1 for h in t_hist)
    assert all(h["error"] == failed[h["id"]].error and h["n_speeches"] == speeches_before[h["id"]] for h in t_hist)
    assert {h["id"] for h in v_hist} == call_failed and all("test outage" in h["error"] for h in v_hist)

    from debate.export import tables

    exported = tables(store, "r")  # the history goes to pandas with the run
    assert sorted(exported["transcript_failures"].id) == sorted(failed) and set(exported["verdict_failures"].id) == call_failed

    report = build_report(store, "r")
    status = report.status.set_index("protocol")
    assert "failed" not in status.columns
    assert status["complete"].to_dict() == {"debate": 2 * N_QUESTIONS, "blind": N_QUESTIONS}
    acc = report.accuracy.set_index("protocol")
    assert (acc.n + acc.failed).to_dict() == {"debate": 2 * N_QUESTIONS, "blind": N_QUESTIONS}, "each debate counted once"

    # the retried debates say what an uninterrupted run says, word for word (per-speech seeds)
    clean = run_tournament(load_tournament(config(tmp_path / "clean")), run="r", progress=False,
                           policies={"p": debater(outage), "j": FlakyJudge(outage)})
    assert {t.id: [s.text for s in t.speeches] for t in clean.store.transcripts("r")} == \
        {t.id: [s.text for s in t.speeches] for t in after}

    # a second retry finds nothing failed: it writes nothing
    counts = [store.count(k, "r") for k in ("transcripts", "verdicts")] + [len(speech_keys(store))]
    again = run_tournament(resume_config(store, "r"), run="r", resume=True, retry_failed=True, progress=False,
                           policies=policies)
    assert again.retried == (0, 0) and again.played == 0 and again.judged == 0
    assert [store.count(k, "r") for k in ("transcripts", "verdicts")] + [len(speech_keys(store))] == counts
    assert store.failures("r") == (t_hist, v_hist)


def test_a_failure_that_repeats_is_stored_again_with_its_next_attempt(failed_run):
    first, policies, outage = failed_run
    store = first.store
    failed = {t.id for t in store.transcripts("r", status="failed")}
    again = run_tournament(resume_config(store, "r"), run="r", resume=True, retry_failed=True, progress=False,
                           policies=policies)  # the outage goes on
    assert again.retried[0] == len(failed)
    t_hist, _ = store.failures("r")
    assert {(h["id"], h["attempt"]) for h in t_hist} == {(i, 1) for i in failed}
    still = {t.id for t in store.transcripts("r", status="failed")}
    assert still and still <= failed
    outage.on = False
    run_tournament(resume_config(store, "r"), run="r", resume=True, retry_failed=True, progress=False, policies=policies)
    t_hist, _ = store.failures("r")
    assert {h["id"] for h in t_hist if h["attempt"] == 2} == still
    assert all(t.status == "complete" for t in store.transcripts("r"))


def test_whole_judge_call_failure_is_retried(tmp_path):
    from debate.backends.mock import mock_policy

    cfg = load_tournament(config(tmp_path))
    first = run_tournament(cfg, run="j", progress=False, policies={"p": mock_policy("p"), "j": mock_policy("j", fail="score")})
    verdicts = first.store.verdicts("j")
    assert verdicts and all(v.winner is None and v.error.startswith("judge call failed") for v in verdicts)
    result = run_tournament(resume_config(first.store, "j"), run="j", resume=True, retry_failed=True, progress=False,
                            policies={"p": mock_policy("p"), "j": mock_policy("j")})
    assert result.retried == (0, len(verdicts)) and result.played == 0 and result.judged == len(verdicts)
    assert all(v.winner is not None for v in first.store.verdicts("j"))
    assert len(first.store.failures("j")[1]) == len(verdicts)


def test_retry_failed_needs_resume(tmp_path, capsys):
    from ui.cli import main

    assert main(["tournament", "--retry-failed", "--results", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--retry-failed" in err and "--resume RUN" in err
    assert not (tmp_path / "debate.sqlite").exists(), "nothing is stored by a refused command"
    with pytest.raises(Exception, match="--resume RUN"):
        run_tournament(load_tournament(config(tmp_path)), run="x", retry_failed=True, progress=False)
