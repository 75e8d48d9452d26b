"""A one-round tournament whose debaters run on `backend: vllm`, hosted as the config says (a Ray actor),
with the transformers judge; its transcripts and verdicts go through the same store and `debate report`."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_one_round_tournament_with_vllm_debaters(tmp_path, capsys):
    import ray

    from arenas.judging import stored_config
    from arenas.tournament import run_tournament
    from debate.configs import load_tournament
    from ui.cli import main

    cfg = load_tournament({
        "name": "vllm-one-round",
        "questions": {"source": "synthetic", "n": 2, "seed": 3, "difficulty": "easy"},
        "policies": [{"name": "debater", "model": "embedded", "backend": "vllm", "num_cpus": 1},
                     {"name": "judge", "model": "embedded", "backend": "transformers", "device": "cpu", "num_cpus": 1}],
        "entries": [{"name": "greedy", "policy": "debater", "temperature": 0.0, "max_new_tokens": 32},
                    {"name": "sampled", "policy": "debater", "temperature": 0.8, "max_new_tokens": 32}],
        "judge": {"name": "embedded-judge", "policy": "judge"},
        "protocols": [{"name": "debate", "rounds": 1, "word_limit": 40}],
        "results": str(tmp_path),
    })
    try:
        result = run_tournament(cfg, run="v1", progress=False)
    finally:
        ray.shutdown()
    store = result.store
    transcripts = store.transcripts("v1")
    assert len(transcripts) == 4  # 2 questions, both seatings of the two entries
    assert all(t.status == "complete" for t in transcripts), [t.error for t in transcripts]
    speeches = [s for t in transcripts for s in t.speeches]
    assert len(speeches) == 8 and all(s.n_tokens > 0 and s.text for s in speeches)
    verdicts = store.verdicts("v1")
    assert {v.transcript_id for v in verdicts} == {t.id for t in transcripts}
    assert sum(v.p_answer0 is not None for v in verdicts) >= 3  # a verdict from letter log-probabilities
    saved = {p.name: p for p in stored_config(store, "v1").policies}
    # what `auto` resolved to inside the actor is recorded with the run
    assert saved["debater"].backend == "vllm" and saved["debater"].device in ("cpu", "cuda")
    assert saved["debater"].dtype in ("float32", "bfloat16", "float16")
    assert main(["report", "v1", "--results", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "judge accuracy by protocol" in report and "greedy" in report
    print("\n" + report)
