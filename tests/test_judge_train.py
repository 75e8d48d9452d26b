"""Judge training: losses, data determinism, disjoint splits, storage and evaluation, on the tiny model."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import pytest
import torch

from debate.configs import ConfigError
from debate.prompts import load_prompts
from debate.synthetic import generate
from judges.judge_data import blind, evidence_decides, shuffled_with_twins, templated, twins
from judges.train import JudgeTrainConfig, LetterScorer, judge_loss, split_questions, train_judge, training_step


@pytest.fixture()
def fresh_backend(tiny_model_dir):
    from debate.backends.hf import TransformersBackend

    return TransformersBackend(tiny_model_dir, device="cpu", name="tiny")


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.mark.parametrize("objective", ["ce", "bt", "ce+bt"])
def test_loss_goes_down_and_parameters_change(fresh_backend, objective):
    examples = templated(generate(4, seed=7), seed=0)
    cfg = JudgeTrainConfig(objective=objective, lr=1e-2)
    scorer = LetterScorer(fresh_backend, load_prompts("default"))
    model = fresh_backend.model
    model.train()
    before = _params(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    losses = [training_step(scorer, opt, examples, cfg) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert not torch.equal(before, _params(model))


def test_loss_formulas():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([0, 1, 1, 0])  # debate 1: answer 0 correct (A, then B); debate 2: answer 1 correct
    ce = judge_loss("ce", logits, targets)
    assert math.isclose(float(ce), float(torch.nn.functional.cross_entropy(logits, targets)), rel_tol=1e-6)
    bt = judge_loss("bt", logits, targets)
    # debate 1: reward of answer 0 = (2 - (-2)) / 2 = 2, correct is 0; debate 2: reward 0, a coin flip
    expected = (-math.log(1 / (1 + math.exp(-2))) + math.log(2)) / 2
    assert math.isclose(float(bt), expected, rel_tol=1e-5)
    assert math.isclose(float(judge_loss("ce+bt", logits, targets)), float(ce) + expected, rel_tol=1e-5)


def test_mass_loss_is_zero_above_the_hinge_and_grows_below_it_while_ce_and_bt_ignore_the_mass():
    from judges.train import MASS_HINGE, mass_loss

    healthy = torch.log(torch.tensor([[0.3, 0.2], [0.1, 0.05]]))
    assert float(mass_loss(healthy)) == 0.0
    low = torch.log(torch.tensor([[1e-5, 1e-5], [0.3, 0.2]]))
    assert math.isclose(float(mass_loss(low)), math.log(MASS_HINGE / 2e-5) / 2, rel_tol=1e-5)
    lost = low.clone().requires_grad_(True)
    mass_loss(lost).backward()
    assert (lost.grad[0] < 0).all() and (lost.grad[1] == 0).all()  # descent raises the low row's letters only
    targets = torch.tensor([0, 1])
    for objective in ("ce", "ce+bt"):  # a shift of both letters (the mass) leaves the objectives unchanged
        assert math.isclose(float(judge_loss(objective, healthy, targets)), float(judge_loss(objective, healthy - 7.0, targets)), rel_tol=1e-6)


def test_bt_ignores_a_letter_bias_that_ce_pays_for():
    """A constant preference for the letter A (the base model's bias) changes ce but not bt: bt's gradient
    goes to the content from the first step, the reason the embedded preset trains on ce+bt."""
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.5], [0.5, 0.0]])
    targets = torch.tensor([0, 1, 1, 0])
    biased = logits + torch.tensor([3.0, 0.0])
    assert math.isclose(float(judge_loss("bt", biased, targets)), float(judge_loss("bt", logits, targets)), rel_tol=1e-6)
    assert float(judge_loss("ce", biased, targets)) > float(judge_loss("ce", logits, targets)) + 0.5


def test_templated_data_is_deterministic_and_labelled():
    qs = generate(12, seed=5)
    a, b = templated(qs, seed=1), templated(qs, seed=1)
    assert [e.case.transcript for e in a] == [e.case.transcript for e in b]
    c = templated(qs, seed=2)
    assert [e.case.transcript.speeches for e in a] != [e.case.transcript.speeches for e in c]
    for ex in a:
        honest = [s for s in ex.case.transcript.speeches if s.side == ex.label]
        liar = [s for s in ex.case.transcript.speeches if s.side != ex.label]
        assert len(honest) == len(liar) == 1
        assert honest[0].quotes and honest[0].quotes[0].verified  # the deciding sentence, verified
        assert liar[0].quotes[0].verified == (ex.trick == "wrong-object")
        assert "<v_quote>" in honest[0].judge_text
    assert {e.trick for e in a} == {"wrong-object", "invented"}
    assert all(not e.case.transcript.speeches for e in blind(qs))


def test_twins_flip_the_label_of_wrong_object_debates_only():
    qs = generate(30, seed=5)
    plain = templated(qs, seed=1)
    twin = twins(plain)
    wrong_object = [e for e in plain if e.trick == "wrong-object"]
    assert wrong_object and len(twin) == len(wrong_object)  # an invented quote holds no fact: no twin
    for ex, tw in zip(wrong_object, twin):
        t, t2 = ex.case.transcript, tw.case.transcript
        assert [s.judge_text for s in t2.speeches] == [s.judge_text for s in t.speeches]  # the same speeches
        assert tw.label == 1 - ex.label and tw.case.question.question != ex.case.question.question
        assert t2.id != t.id and t2.question_id == tw.case.question.id and tw.trick == "wrong-object-twin"
        assert tw.honest_first != ex.honest_first
    # a debate whose dishonest side quotes nothing has no twin: it would be decided by elimination
    q = qs[0]
    ex = next(e for e in plain if e.case.question.id == q.id)
    mute = [s for s in ex.case.transcript.speeches if s.side == ex.label]
    bare = type(ex)(type(ex.case)(replace(ex.case.transcript, speeches=tuple(mute)), q, ex.case.protocol), "generated")
    assert twins([bare]) == []


def test_evidence_decides_only_when_the_honest_side_alone_holds_the_deciding_fact():
    plain = templated(generate(12, seed=5), seed=1)
    assert all(evidence_decides(ex) for ex in plain)  # honest quotes the deciding sentence; the other side never does
    assert all(evidence_decides(ex) for ex in twins(plain))  # a twin is decided by the quote the original liar gave
    ex = plain[0]
    liar_only = tuple(s for s in ex.case.transcript.speeches if s.side != ex.label)
    bare = type(ex)(type(ex.case)(replace(ex.case.transcript, speeches=liar_only), ex.case.question, ex.case.protocol), "generated")
    assert not evidence_decides(bare)


def test_shuffle_keeps_each_twin_after_its_debate_and_is_plain_without_twins():
    import random

    plain = templated(generate(30, seed=5), seed=1)
    both = plain + twins(plain)
    out = shuffled_with_twins(both, random.Random(3))
    assert sorted(e.case.transcript.id for e in out) == sorted(e.case.transcript.id for e in both)
    for k, ex in enumerate(out):
        if ex.trick.endswith("twin"):
            assert out[k - 1].case.transcript.speeches == ex.case.transcript.speeches and out[k - 1].label != ex.label
    assert [e.case.transcript.id for e in out] != [e.case.transcript.id for e in both]
    expected = list(plain)
    random.Random(3).shuffle(expected)
    assert shuffled_with_twins(plain, random.Random(3)) == expected  # judges trained without twins see the same order


def test_train_validation_and_test_questions_never_overlap():
    sets = split_questions(JudgeTrainConfig(train_questions=40, val_questions=20, test_questions=20))
    ids = [{q.id for q in v} for v in sets.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert {q.split for q in sets["train"]} == {"train"}
    with pytest.raises(ConfigError, match="must differ"):
        JudgeTrainConfig(train_seed=1, val_seed=1, test_seed=2)


def test_lora_trains_only_the_adapter(fresh_backend):
    pytest.importorskip("peft")
    from judges.train import _lora

    cfg = JudgeTrainConfig(method="lora", lr=1e-2, lora_r=4)
    # seeded: the adapter's init came from whatever earlier tests left the generator at, and in 10 steps the loss
    # of the tiny model stayed within 1e-3 of ln 2, so the check below failed after test_reward_model; 30 steps
    # pass for seeds 0-3
    torch.manual_seed(0)
    base_weight = fresh_backend.model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    fresh_backend.model = _lora(fresh_backend.model, cfg)
    scorer = LetterScorer(fresh_backend, load_prompts("default"))
    trainable = [p for p in fresh_backend.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr)
    losses = [training_step(scorer, opt, templated(generate(4, seed=3), seed=0), cfg) for _ in range(30)]
    assert losses[-1] < losses[0]
    merged = fresh_backend.model.merge_and_unload()
    assert not torch.equal(base_weight, merged.model.layers[0].self_attn.q_proj.weight)


def test_train_store_and_evaluate_a_tiny_judge(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    from debate.embedded import resolve_model
    from arenas.judge_eval import evaluate_trained

    cfg = JudgeTrainConfig(name="tiny", base_model=str(tiny_model_dir), train_questions=8, val_questions=4, test_questions=6,
                           generated_train=2, generated_test=2, debater_max_new_tokens=6, epochs=1,
                           train_seed=7, val_seed=8, test_seed=9)  # not the defaults, so the record must come from the config
    folder = train_judge(cfg, progress=False)
    meta = json.loads((folder / "judge.json").read_text())
    assert meta["data"]["seeds"] == {"train": 7, "validation": 8, "test": 9}
    assert meta["data"]["train_examples"] == 8 + 2 * 2
    assert len(meta["metrics"]["epochs"]) == 1 and math.isfinite(meta["metrics"]["epochs"][0]["loss"])
    assert resolve_model("judge:tiny") == folder / "model"
    table = evaluate_trained("tiny", progress=False)
    kinds = dict(zip(table.slice, table.n + table.failed))
    assert kinds["templated"] == 6 and kinds["generated"] == 4 and kinds["blind"] == 6
    assert any(s.startswith("templated: dishonest quotes a verified sentence") for s in table.slice)
    assert (folder / "eval.csv").exists()
    from arenas.judge_eval import test_sets

    usual, wider = test_sets(folder, meta), test_sets(folder, meta, templated_questions=11)
    assert len(wider["templated"]) == 11 and len(wider["blind"]) == 11  # past the 6 + 2 questions first drawn
    assert [e.case.transcript.id for e in wider["templated"][:6]] == [e.case.transcript.id for e in usual["templated"]]
    assert [e.case.transcript.id for e in wider["generated"]] == [e.case.transcript.id for e in usual["generated"]]
    with pytest.raises(ConfigError, match="--templated"):
        test_sets(folder, meta, templated_questions=-1)


def test_missing_trained_judge_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path))
    from debate.embedded import resolve_model

    with pytest.raises(FileNotFoundError, match="debate judge train --preset nope"):
        resolve_model("judge:nope")


@pytest.mark.slow
def test_embedded_judge_trains_a_few_steps_on_real_data(tmp_path, monkeypatch):
    from debate.embedded import ensure_embedded

    ensure_embedded()  # the shared cache of the embedded model
    cfg = JudgeTrainConfig(name="few", train_questions=8, val_questions=4, test_questions=4, generated_train=1,
                           generated_test=1, debater_max_new_tokens=16, epochs=1, train_layers=6)  # the preset's path
    folder = train_judge(cfg, progress=False, out=tmp_path / "few")
    meta = json.loads((folder / "judge.json").read_text())
    assert meta["data"]["train_examples"] == 8 + 2
    assert math.isfinite(meta["metrics"]["epochs"][0]["loss"])
    full, n_val = meta["metrics"]["epochs"][0]["val_accuracy_full_model"], meta["data"]["val_examples"]
    assert n_val == 4 and full * n_val == pytest.approx(round(full * n_val))  # a count of the 4 validation debates
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(folder / "model")).config.num_hidden_layers == 30


def test_stored_lower_layer_states_give_the_same_letter_logits(fresh_backend):
    from judges.frozen_prefix import FrozenPrefix
    from judges.train import batch_logits

    examples = templated(generate(5, seed=11), seed=0)  # prompts of different lengths: padding differs per batch
    scorer = LetterScorer(fresh_backend, load_prompts("default"))
    fresh_backend.model.eval()
    with torch.no_grad():
        direct, targets = batch_logits(scorer, examples)
        prefix = FrozenPrefix(scorer, top=1)
        prefix.add(examples, batch=2)
        with prefix.upper():
            stored, stored_targets = batch_logits(scorer, examples[::-1], prefix=prefix)
    assert len(fresh_backend.model.model.layers) == 2  # restored after the cut
    n = len(examples)
    order = [r for d in reversed(range(n)) for r in (2 * d, 2 * d + 1)]
    assert torch.equal(stored_targets, targets[order])
    assert torch.allclose(stored, direct[order], atol=1e-4), (stored, direct[order])
    kept = dict(prefix.states)
    prefix.add(examples[:2])  # nothing new: a no-op, not an empty batch
    assert prefix.states.keys() == kept.keys()


def test_steps_from_the_shared_head_match_the_whole_model_in_values_and_gradients(tmp_path):
    """The step's two savings (the shared prompt head once a batch, the last layer's MLP at the last position
    only) against the plain path: the whole 3-layer model on the prompts, with the same 2 top layers trained."""
    from debate.backends.hf import TransformersBackend
    from judges.frozen_prefix import FrozenPrefix, _LastPositionOnly
    from judges.train import batch_logits, freeze_below
    from tests.conftest import build_tiny_model

    backend = TransformersBackend(build_tiny_model(tmp_path / "three", layers=3), device="cpu", name="three")
    model = backend.model
    freeze_below(model, 2)
    examples = templated(generate(5, seed=11), seed=0)
    scorer = LetterScorer(backend, load_prompts("default"))
    top = [p for p in model.parameters() if p.requires_grad]

    def value_and_grads(**kw):
        logits, targets = batch_logits(scorer, examples, **kw)
        loss = judge_loss("ce", logits, targets)
        return logits.detach(), torch.autograd.grad(loss, top)

    direct, direct_grads = value_and_grads()
    prefix = FrozenPrefix(scorer, top=2)
    prefix.add(examples, batch=2)
    assert prefix.head is not None and len(prefix.tails) == 2 * len(examples)  # every row continues the shared head
    with prefix.upper():
        assert isinstance(model.model.layers[-1], _LastPositionOnly)
        assert [layer.self_attn.layer_idx for layer in prefix.layers[1:]] == [0, 1]
        stored, stored_grads = value_and_grads(prefix=prefix)
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]  # restored after the cut
    assert torch.allclose(stored, direct, atol=1e-4), (stored, direct)
    for a, b in zip(stored_grads, direct_grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6), (a - b).abs().max()


def test_top_layer_training_on_stored_states_changes_only_the_top(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = JudgeTrainConfig(name="top", base_model=str(tiny_model_dir), train_questions=8, val_questions=4, test_questions=4,
                           generated_train=1, generated_test=1, debater_max_new_tokens=6, epochs=3, lr=1e-2,
                           train_layers=1, cache_lower=True, warmup_steps=2)
    folder = train_judge(cfg, progress=False, out=tmp_path / "top")
    before = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(folder / "model")).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("model.layers.1.", "model.norm.")) for k in changed), changed
    epochs = json.loads((folder / "judge.json").read_text())["metrics"]["epochs"]
    assert len(epochs) == 3 and epochs[-1]["loss"] < epochs[0]["loss"]


def test_unknown_precision_names_are_refused():
    with pytest.raises(ConfigError, match="lower_dtype.*known: auto"):
        JudgeTrainConfig(train_layers=4, lower_dtype="bf16")
    with pytest.raises(ConfigError, match="autocast"):
        JudgeTrainConfig(autocast="yes")


@pytest.mark.parametrize("train_layers", [0, 1])
def test_bench_judge_train_prints_both_timings_and_their_ratio(tiny_model_dir, capsys, train_layers):
    from judges.bench import bench_judge_train

    line = bench_judge_train(model=str(tiny_model_dir), batch_debates=2, repeats=1, train_layers=train_layers)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == line and line["prompts"] == 4 and line["train_layers"] == train_layers
    assert line["step_s"] > 0 and line["plain_fwd_bwd_s"] > 0
    assert line["ratio"] > 0  # plain / step, from unrounded times
    assert ("lower_once_s" in line) == bool(train_layers)


@pytest.mark.parametrize("objective", ["bt", "ce+bt"])
def test_order_comparing_objectives_need_both_orders(objective):
    with pytest.raises(ConfigError, match=re.escape(f"objective {objective} compares the two orders")):
        JudgeTrainConfig(objective=objective, orders="alternate")


def test_negative_letter_mass_is_refused():
    with pytest.raises(ConfigError, match="letter_mass"):
        JudgeTrainConfig(letter_mass=-1.0)


def test_zero_epochs_is_refused():
    with pytest.raises(ConfigError, match="epochs and batch_debates"):
        JudgeTrainConfig(epochs=0)


def test_a_judge_preset_that_starts_from_another_trains_that_one_first(tmp_path, monkeypatch):
    """embedded-twins starts from judge:embedded: a bare cache trains embedded, then embedded-twins, each once."""
    import judges.train as train_mod
    from arenas.tournament import ensure_model
    from debate.embedded import judge_dir

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path))
    trained = []

    def fake_train(cfg, progress=True):
        trained.append((cfg.name, cfg.base_model))
        (judge_dir(cfg.name) / "model").mkdir(parents=True)
        (judge_dir(cfg.name) / "model" / "config.json").write_text("{}")

    monkeypatch.setattr(train_mod, "train_judge", fake_train)
    ensure_model("judge:embedded-twins", progress=False)
    assert trained == [("embedded", "embedded"), ("embedded-twins", "judge:embedded")]
    ensure_model("judge:embedded-twins", progress=False)
    assert len(trained) == 2
    from judges.presets import train_config

    assert train_config(None, "embedded-twins").twins and not train_config(None, "embedded").twins
