"""One judging path for tournaments, re-judging and evaluation; tournaments on the mock backend."""

from __future__ import annotations

import sqlite3

import pytest

from arenas.judging import cases_to_judge, judge_cases, stored_protocols
from arenas.rejudge import rejudge
from arenas.tournament import run_tournament
from debate.actors import LocalPolicy, PolicyServer
from debate.backends.mock import MockBackend, mock_policy
from debate.configs import load_tournament
from debate.prompts import load_prompts
from judges.model_judge import ModelJudge


def mock_config(results, **over) -> dict:
    """A tournament whose policies are `backend: mock`: no model, deterministic."""
    data = {
        "name": "mock",
        "questions": {"source": "synthetic", "n": 2, "seed": 3},
        "policies": [{"name": "p", "backend": "mock"}, {"name": "j", "backend": "mock"}],
        "entries": [{"name": "cold", "policy": "p", "temperature": 0.0}, {"name": "hot", "policy": "p", "prompt": "assertive"}],
        "judge": {"name": "mock-judge", "policy": "j"},
        "protocols": [{"name": "debate", "rounds": 3, "word_limit": 30, "beliefs": True}, {"name": "blind"}],
        "results": str(results),
    }
    data.update(over)
    return data


def local_policies(cfg) -> dict[str, LocalPolicy]:
    """The config's policies in this process, each built by the backend registry from its config."""
    return {p.name: LocalPolicy(PolicyServer(p)) for p in cfg.policies}


def test_mock_backend_tournament_from_config_is_deterministic(tmp_path):
    runs = []
    for k in range(2):
        cfg = load_tournament(mock_config(tmp_path / str(k)))
        policies = local_policies(cfg)
        assert all(isinstance(h.backend, MockBackend) for h in policies.values())
        result = run_tournament(cfg, run="m", progress=False, policies=policies)
        ts = result.store.transcripts("m")
        assert len(ts) == 6 and all(t.status == "complete" for t in ts)  # 4 debates, 2 blind
        assert (result.played, result.judged) == (6, 6)
        verdicts = result.store.verdicts("m")
        assert {v.transcript_id for v in verdicts} == {t.id for t in ts}
        runs.append(([s.text for t in ts for s in t.speeches], [v.p_answer0 for v in verdicts]))
    assert runs[0] == runs[1]
    texts, probs = runs[0]
    assert len(texts) == 4 * 6 and len(set(probs)) > 1  # the mock judge's verdicts vary with the prompt


def test_tournament_judge_reads_the_run_once_per_phase(tmp_path, monkeypatch):
    from debate.store import Store

    reads: list[str] = []
    original = Store.transcripts
    monkeypatch.setattr(Store, "transcripts", lambda self, run, status=None: reads.append(status) or original(self, run, status))
    cfg = load_tournament(mock_config(tmp_path))
    run_tournament(cfg, run="m", progress=False, policies=local_policies(cfg))
    assert reads == [None]  # one read of the whole run, shared by play and judging


def test_rejudge_rebuilds_protocols_from_the_stored_config(tmp_path):
    """The stored config asks for beliefs over 3 rounds: a re-judge asks for them too (2 per debate)."""
    cfg = load_tournament(mock_config(tmp_path))
    result = run_tournament(cfg, run="m", progress=False, policies=local_policies(cfg))
    store = result.store
    (proto,) = [p for name, p in stored_protocols(store, "m").items() if name == "debate"]
    assert (proto.rounds, proto.word_limit, proto.beliefs) == (3, 30, True)
    original = {v.transcript_id: v for v in store.verdicts("m", judge="mock-judge")}
    judge = mock_policy("other")
    assert rejudge(store, "m", "embedded", progress=False, policy=judge) == 6
    again = {v.transcript_id: v for v in store.verdicts("m") if v.judge != "mock-judge"}
    assert set(again) == set(original)
    debates = {t.id for t in store.transcripts("m") if t.protocol == "debate"}
    for tid, v in again.items():
        assert len(v.beliefs) == (2 if tid in debates else 0) == len(original[tid].beliefs)
    # every turn's end was asked about: prompts with 2, 4 and 6 speeches
    shown = {dict(r.messages)["user"].count("Debater ") for c in judge.backend.score_calls for r in c}
    assert {2, 4, 6} <= shown
    assert rejudge(store, "m", "embedded", progress=False, policy=judge) == 0  # nothing twice


def test_judge_cases_stores_each_batch_as_it_comes(tmp_path):
    cfg = load_tournament(mock_config(tmp_path, protocols=[{"name": "blind"}, {"name": "expert"}], entries=[]))
    store = run_tournament(cfg, run="m", progress=False, policies=local_policies(cfg)).store
    cases = cases_to_judge(store, "m", "late")
    assert len(cases) == 4
    stored: list[int] = []

    def letters(messages):
        if not stored or stored[-1] != "seen":
            with sqlite3.connect(store.path) as c:
                stored.append(c.execute("SELECT COUNT(*) FROM verdicts WHERE judge = 'late'").fetchone()[0])
        return (0.7, 0.3)

    judge = ModelJudge("late", mock_policy("late", letters=letters), load_prompts("default"), chunk=1)
    verdicts = judge_cases(judge, cases, store, progress=False)
    assert len(verdicts) == 4 and [v.judge for v in verdicts] == ["late"] * 4
    assert sorted(set(stored)) == [0, 1, 2, 3]  # before each batch, the earlier batches were stored
    assert cases_to_judge(store, "m", "late") == []


def test_resume_of_an_imported_run_is_refused_with_the_fix(tmp_path):
    import time

    from arenas.tournament import resume_config
    from debate.configs import ConfigError
    from debate.records import RunInfo
    from debate.store import Store

    store = Store(tmp_path)
    store.add_run(RunInfo("nyu", "import-nyu", '{"path": "x"}', time.time()))
    with pytest.raises(ConfigError, match="not a tournament.*debate judge run nyu"):
        resume_config(store, "nyu")


def test_resume_writes_to_the_results_folder_it_reads(tmp_path, capsys, monkeypatch):
    """`--resume RUN --results B` on a run first played in A: B is read and written, A is left alone."""
    import shutil

    import debate.actors

    from debate.store import Store
    from ui.cli import main

    first, moved = tmp_path / "A", tmp_path / "B"
    cfg = load_tournament(mock_config(first, protocols=[{"name": "debate", "rounds": 1}]))
    run_tournament(cfg, run="m", progress=False, policies=local_policies(cfg))
    shutil.copytree(first, moved)
    with sqlite3.connect(Store(moved).path) as c:
        c.execute("DELETE FROM verdicts")
    before = (first / "m" / "config.yaml").read_text(), Store(first).count("verdicts", "m")
    # the stored config's `backend: mock` policies, started in this process rather than as Ray actors
    monkeypatch.setattr(debate.actors, "start_policies", lambda policies, ray, backends=None: {p.name: LocalPolicy(PolicyServer(p)) for p in policies})
    assert main(["tournament", "--resume", "m", "--results", str(moved), "--quiet"]) == 0
    assert "4 judged in this call" in capsys.readouterr().out  # 2 questions x 2 seatings
    assert Store(moved).count("verdicts", "m") == 4
    assert (moved / "m" / "accuracy.png").exists() and f"results: {moved}" in (moved / "m" / "config.yaml").read_text()
    assert ((first / "m" / "config.yaml").read_text(), Store(first).count("verdicts", "m")) == before
    assert not (first / "m" / "accuracy.png").exists()
