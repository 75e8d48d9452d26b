"""Precision chosen for the machine, and the CUDA failures caught on a CPU.

CUDA's `auto` serves in bfloat16; these tests load the tiny model in bfloat16 on the CPU so that the
paths that broke on a GPU (frozen-prefix logits, judge scoring, judge training and its serving check)
run here too.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from debate import precision
from debate.prompts import load_prompts
from debate.synthetic import generate
from judges.judge_data import templated
from judges.train import JudgeTrainConfig, LetterScorer, batch_logits, train_judge


@pytest.fixture()
def bf16_backend(tiny_model_dir):
    from debate.backends.hf import TransformersBackend

    return TransformersBackend(tiny_model_dir, device="cpu", dtype="bfloat16", name="tiny-bf16")


def test_auto_on_a_cpu_is_float32_unless_bfloat16_is_native(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: False)
    assert precision.serving_dtype("cpu") == "float32"
    assert precision.lower_dtype("cpu") == "float32"
    assert precision.autocast_dtype("cpu", "auto") is None
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: True)
    assert precision.lower_dtype("cpu") == "bfloat16"
    assert precision.serving_dtype("cpu") == "float32"  # served in float32 on a CPU either way
    assert precision.lower_dtype("cpu", "float32") == "float32"  # an explicit choice is kept


def test_a_trained_judge_is_served_in_the_dtype_it_was_validated_in(tmp_path):
    model = tmp_path / "judge" / "model"
    model.mkdir(parents=True)
    (model.parent / "judge.json").write_text(json.dumps({"serving": {"cuda": {"dtype": "float32"}}}))
    assert precision.serving_dtype("cuda:0", "auto", model) == "float32"
    (model.parent / "judge.json").write_text(json.dumps({"serving": {}}))
    assert precision.serving_dtype("cuda", "auto", model) == "float32"  # not validated there: its training dtype
    assert precision.serving_dtype("cuda", "bfloat16", model) == "bfloat16"  # explicit wins


def test_backend_records_what_auto_chose(tiny_model_dir):
    from debate.backends.hf import TransformersBackend

    b = TransformersBackend(tiny_model_dir, device="cpu")
    assert b.dtype == precision.serving_dtype("cpu") and b.model.dtype == getattr(torch, b.dtype)


def test_frozen_prefix_runs_on_a_bfloat16_model(bf16_backend):
    """The CUDA crash: stored float32 states fed to bfloat16 top layers (mat1 and mat2 dtypes differ)."""
    from judges.frozen_prefix import FrozenPrefix

    examples = templated(generate(3, seed=11), seed=0)
    scorer = LetterScorer(bf16_backend, load_prompts("default"))
    with torch.no_grad():
        direct, _ = batch_logits(scorer, examples)
        prefix = FrozenPrefix(scorer, top=1, dtype=torch.bfloat16)
        prefix.add(examples)
        assert all(s.dtype == torch.bfloat16 for s in prefix.states.values())
        with prefix.upper():
            stored, _ = batch_logits(scorer, examples, prefix=prefix)
    assert torch.isfinite(stored).all()
    assert torch.allclose(stored, direct, atol=0.1), (stored, direct)  # bfloat16 rounding only


def test_judge_scoring_on_a_bfloat16_model(bf16_backend):
    from debate.backends.base import ScoreRequest, messages

    res = bf16_backend.score([ScoreRequest(messages(("user", "A or B?")), "Answer:", (" A", " B"))] * 3)
    assert all(math.isfinite(x) for r in res for x in r.logprobs)


def test_training_keeps_float32_weights_where_auto_serves_bfloat16(tiny_model_dir, tmp_path, monkeypatch):
    """On CUDA `auto` serves in bfloat16: training must still update float32 weights (bfloat16 AdamW went to
    NaN), store its lower-layer states in the top layers' dtype, and check the judge in the serving dtype."""
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: True)  # lower pass in bfloat16, as on a GPU
    real = precision.serving_dtype
    monkeypatch.setattr("judges.train.serving_dtype", lambda device, requested="auto", path=None: "bfloat16" if requested == "auto" else real(device, requested, path))
    cfg = JudgeTrainConfig(name="tiny", base_model=str(tiny_model_dir), train_questions=8, val_questions=4, test_questions=4,
                           generated_train=1, generated_test=1, debater_max_new_tokens=6, epochs=2, lr=1e-2,
                           train_layers=1, cache_lower=True)
    folder = train_judge(cfg, progress=False, out=tmp_path / "tiny")
    meta = json.loads((folder / "judge.json").read_text())
    assert meta["precision"]["weights"] == "float32" and meta["precision"]["lower_dtype"] == "bfloat16"
    assert all(math.isfinite(e["loss"]) for e in meta["metrics"]["epochs"])
    checks = {c["dtype"]: c for c in meta["serving"]["cpu"]["checks"]}
    assert set(checks) == {"float32", "bfloat16"}  # validated in the serving dtype, against float32
    assert meta["serving"]["cpu"]["dtype"] in ("bfloat16", "float32")
    for c in checks.values():
        assert c["debates"] == 4 and c["letter_mass"]["min"] > 0
    assert meta["serving"]["cpu"]["dtype"] == "bfloat16" or checks["bfloat16"]["failed"] > 0 or (
        checks["bfloat16"]["accuracy"] < checks["float32"]["accuracy"] - 0.05)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(folder / "model")).dtype == torch.float32


def test_a_judge_that_fails_verdicts_where_served_is_a_failed_run(tiny_model_dir, tmp_path):
    """A floor no dtype can meet: every validation verdict would fail, so nothing is stored."""
    from judges.validation import JudgeTrainingFailed

    cfg = JudgeTrainConfig(name="tiny", base_model=str(tiny_model_dir), train_questions=4, val_questions=4, test_questions=4,
                           generated_train=1, generated_test=1, debater_max_new_tokens=6, epochs=1, min_letter_mass=1.5)
    with pytest.raises(JudgeTrainingFailed, match="would fail verdicts"):
        train_judge(cfg, progress=False, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.gpu
def test_tiny_judge_trains_and_serves_on_cuda(tiny_model_dir, tmp_path):
    cfg = JudgeTrainConfig(name="tiny", base_model=str(tiny_model_dir), train_questions=8, val_questions=4, test_questions=4,
                           generated_train=1, generated_test=1, debater_max_new_tokens=6, epochs=2, lr=1e-2,
                           train_layers=1, device="cuda")
    folder = train_judge(cfg, progress=False, out=tmp_path / "tiny")
    meta = json.loads((folder / "judge.json").read_text())
    assert meta["precision"]["device"].startswith("cuda")
    assert all(math.isfinite(e["loss"]) for e in meta["metrics"]["epochs"])
    assert "cuda" in meta["serving"]
