"""The learner on the tiny random Llama: log-probs, each objective's direction, skips, checkpoints, bench."""

from __future__ import annotations

import random

import pytest
import torch

from debate.training.config import TrainConfig
from debate.training.learner import Learner
from debate.training.logprobs import completion_logps, sequence_logratio
from debate.training.samples import Sample

SPEECHES = ["The red lantern is in the cellar.", "Answer: B A B", "Debater for A: quote the cellar", "A B A B"]


def _backend(folder):
    from debate.backends.hf import TransformersBackend

    return TransformersBackend(folder, device="cpu", dtype="float32", threads=1, name="tiny")


def _learner(folder, **over) -> Learner:
    torch.manual_seed(0)
    cfg = dict(objective="dpo", lr=1e-2, batch=4, epochs=1, device="cpu", lora_r=4, lora_alpha=8)
    cfg.update(over)
    return Learner(_backend(folder), TrainConfig(**cfg))


def _sample(backend, i: int, completion: str, reward: float = 0.0, q: str = "q0", baseline: float = 0.0) -> Sample:
    prompt = backend.render([("system", "You argue."), ("user", f"Where is the lantern? {'A B ' * i}")])
    return Sample(key=f"s{i}", transcript_id=f"t{i}", question_id=q, side=0, role="debater_a", turn=0,
                  prompt=prompt, completion=completion, reward=reward, baseline=baseline)


def _seq_logp(learner: Learner, samples) -> torch.Tensor:
    logp, mask = learner.policy_logps(samples, grad=False)
    return (logp * mask).sum(1)


def _adapter(learner: Learner) -> dict:
    return {n: p.detach().clone() for n, p in learner.model.named_parameters() if "lora_" in n}


def test_completion_logps_match_unbatched(tiny_model_dir):
    from dataclasses import replace

    backend = _backend(tiny_model_dir)
    samples = [_sample(backend, i, c) for i, c in enumerate(SPEECHES)]  # prompts and speeches of different lengths
    samples[1] = replace(samples[1], ended=False)  # cut off at a limit: its eos was never sampled, so never scored
    logp, mask = completion_logps(backend.model, backend.tokenizer, samples, "cpu", grad=False)
    tok = backend.tokenizer
    for i, s in enumerate(samples):
        p = tok(s.prompt, add_special_tokens=False)["input_ids"]
        c = tok(s.completion, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if s.ended else [])
        with torch.no_grad():
            full = torch.log_softmax(backend.model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
        direct = torch.stack([full[len(p) - 1 + t, c[t]] for t in range(len(c))])
        assert int(mask[i].sum()) == len(c)
        torch.testing.assert_close(logp[i, : len(c)], direct, atol=1e-5, rtol=1e-5)
        assert torch.all(logp[i, len(c) :] == 0)
    r = sequence_logratio(logp, torch.zeros_like(logp), mask, average=True)
    torch.testing.assert_close(r, (logp * mask).sum(1) / mask.sum(1))


def test_rejects_low_precision_weights(tiny_model_dir):
    backend = _backend(tiny_model_dir)
    backend.model.to(torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        Learner(backend, TrainConfig(device="cpu"))


def test_dpo_update_raises_margin_and_keeps_reference(tiny_model_dir):
    learner = _learner(tiny_model_dir, epochs=4)
    b = learner.backend
    assert b.model is learner.model  # the backend generates with the adapter being trained
    chosen, rejected = _sample(b, 0, SPEECHES[0], 1.0), _sample(b, 1, SPEECHES[1], -1.0)
    assert learner.kl_to_reference([chosen, rejected]) == pytest.approx(0.0, abs=1e-6)
    ref_before = learner.reference_logps([chosen, rejected])[0]
    before_w, before = _adapter(learner), _seq_logp(learner, [chosen, rejected])
    out = learner.update([chosen, rejected])
    assert out["units"] == 1 and out["version"] == learner.version == 1 and out["steps"] == 4
    after = _seq_logp(learner, [chosen, rejected])
    assert (after[0] - after[1]) - (before[0] - before[1]) > 0.5
    assert any(not torch.equal(before_w[n], p) for n, p in _adapter(learner).items())
    torch.testing.assert_close(learner.reference_logps([chosen, rejected])[0], ref_before)
    assert out["kl"] != 0.0
    each = learner.sequence_kls([chosen, rejected])  # after the update: one estimate per speech, k3 >= 0
    assert len(each) == 2 and all(k > 0 for k in each)
    assert learner.kl_to_reference([chosen, rejected]) == pytest.approx(sum(each) / 2)


def test_sft_weight_keeps_the_chosen_speech_likely(tiny_model_dir):
    """DPO widens the margin by lowering both speeches as readily as by raising the chosen one; the likelihood
    term (`sft_weight`) makes the same update raise the chosen speech's own log-probability further."""
    after = {}
    for weight in (0.0, 5.0):
        learner = _learner(tiny_model_dir, epochs=4, sft_weight=weight)
        b = learner.backend
        pair = [_sample(b, 0, SPEECHES[0], 1.0), _sample(b, 1, SPEECHES[1], -1.0)]
        before = _seq_logp(learner, pair)
        learner.update(pair)
        after[weight] = _seq_logp(learner, pair) - before
    assert after[5.0][0] > after[0.0][0] + 0.25 and after[5.0][0] > 0  # the chosen speech: more likely
    assert after[5.0][0] - after[5.0][1] > 0  # still preferred to the rejected one


def test_sft_weight_needs_a_pair_objective():
    from debate.configs import ConfigError

    with pytest.raises((ConfigError, ValueError), match="sft_weight"):
        TrainConfig(objective="kto", sft_weight=1.0)


@pytest.mark.parametrize("objective", ["kto", "reinforce", "ppo"])
def test_objectives_follow_the_advantage(tiny_model_dir, objective):
    learner = _learner(tiny_model_dir, objective=objective, epochs=3, beta=0.5)
    b = learner.backend
    good = _sample(b, 0, SPEECHES[0], reward=1.0)
    bad = _sample(b, 1, SPEECHES[1], reward=-1.0)
    other = _sample(b, 2, SPEECHES[2], reward=0.5, q="q1")
    samples = [good, bad, other]
    before = _seq_logp(learner, samples)
    out = learner.update(samples)
    assert "skipped" not in out and out["units"] == 3
    delta = _seq_logp(learner, samples) - before
    assert delta[0] > 0.1 and delta[1] < -0.1 and delta[2] > 0


def test_weight_decay_is_the_configs_and_off_by_default(tiny_model_dir):
    """TRL's trainers decay no weight unless told; torch's AdamW would decay the adapter by 0.01 unasked."""
    assert _learner(tiny_model_dir).optimizer.param_groups[0]["weight_decay"] == 0.0
    assert _learner(tiny_model_dir, weight_decay=0.1).optimizer.param_groups[0]["weight_decay"] == 0.1


def test_kto_mismatched_rows_keep_their_completions_end(tiny_model_dir, monkeypatch):
    """KTO's z scores each prompt with the next row's completion; whether that completion ended (so its eos
    is scored) belongs to the completion, not to the row whose prompt it is paired with."""
    learner = _learner(tiny_model_dir, objective="kto")
    b = learner.backend
    from dataclasses import replace

    samples = [replace(_sample(b, i, SPEECHES[i], reward=1.0 - 2 * (i % 2)), ended=i != 1) for i in range(3)]
    seen: list[list] = []
    scored = learner.policy_logps

    def record(rows, grad):
        seen.append(list(rows))
        return scored(rows, grad)

    monkeypatch.setattr(learner, "policy_logps", record)
    learner.update(samples, kl=False)
    own = {s.key: s.completion for s in samples}
    ended = {s.completion: s.ended for s in samples}
    mismatched = [r for rows in seen for r in rows if r.completion != own[r.key]]  # a prompt with another's text
    assert mismatched and all(r.ended == ended[r.completion] for r in mismatched)


@pytest.mark.parametrize("objective", ["dpo", "kto", "reinforce"])
def test_all_ties_skip_without_touching_weights(tiny_model_dir, objective):
    learner = _learner(tiny_model_dir, objective=objective)
    b = learner.backend
    samples = [_sample(b, i, SPEECHES[i], reward=0.5, baseline=0.5) for i in range(3)]
    weights = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    out = learner.update(samples)
    assert "skipped" in out and out["units"] == 0 and learner.version == 0
    assert all(torch.equal(weights[n], p) for n, p in learner.model.named_parameters())
    assert not learner.optimizer.state


def test_save_load_round_trip(tiny_model_dir, tmp_path):
    learner = _learner(tiny_model_dir)
    b = learner.backend
    samples = [_sample(b, 0, SPEECHES[0], 1.0), _sample(b, 1, SPEECHES[1], -1.0)]
    learner.update(samples)
    folder = learner.save(tmp_path / "ckpt", iteration=3, extra={"warm_start": "/some/folder"})
    learner.update(samples)  # a second save over the first replaces it whole
    learner.save(folder, iteration=4, extra={"warm_start": "/some/folder"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    expected = (torch.rand(3), random.random())
    weights = _adapter(learner)
    moments = [s["exp_avg"].clone() for s in learner.optimizer.state.values()]

    other = _learner(tiny_model_dir)
    torch.rand(5), random.random()  # move the RNGs on: load must put them back
    state = other.load(folder)
    assert (torch.rand(3), random.random()) == (pytest.approx(expected[0]), expected[1])
    assert state["iteration"] == 4 and state["version"] == other.version == 2
    assert state["extra"] == {"warm_start": "/some/folder"}
    for n, p in _adapter(other).items():
        assert torch.equal(p, weights[n])
    for m, s in zip(moments, other.optimizer.state.values()):
        assert torch.equal(m, s["exp_avg"])
    torch.testing.assert_close(_seq_logp(other, samples), _seq_logp(learner, samples))
    path, version = other.save_adapter(tmp_path / "adapter")
    assert version == 2 and (path / "adapter_config.json").exists()


@pytest.mark.parametrize("change", ["shapes", "weights"])
def test_load_refuses_another_base_model(tiny_model_dir, tmp_path, change):
    """Another base model is refused by name, whether its shapes differ or only its weights (the same config
    drawn with another seed: the fingerprint tells them apart); the checkpoint is left as it was."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from debate.backends.hf import TransformersBackend

    learner = _learner(tiny_model_dir)
    folder = learner.save(tmp_path / "ckpt", iteration=0, extra={})
    before = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}
    config = AutoConfig.from_pretrained(tiny_model_dir)
    if change == "shapes":
        config.hidden_size, config.intermediate_size = 48, 96
    torch.manual_seed(1)
    different = AutoModelForCausalLM.from_config(config)
    backend = TransformersBackend(tiny_model_dir, device="cpu", dtype="float32", threads=1, model=different,
                                  tokenizer=_backend(tiny_model_dir).tokenizer)
    other = Learner(backend, TrainConfig(objective="dpo", device="cpu"))
    from debate.training.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="ckpt.*another base model"):  # a ConfigError: `debate` exits 2 with it
        other.load(folder)
    assert {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()} == before


def test_full_method_round_trip(tiny_model_dir, tmp_path):
    learner = _learner(tiny_model_dir, method="full", lr=1e-3)
    b = learner.backend
    samples = [_sample(b, 0, SPEECHES[0], 1.0), _sample(b, 1, SPEECHES[1], -1.0)]
    ref = learner.reference_logps(samples)[0]
    learner.update(samples)
    torch.testing.assert_close(learner.reference_logps(samples)[0], ref)  # the frozen copy did not move
    folder = learner.save(tmp_path / "full", iteration=1, extra={})
    other = _learner(tiny_model_dir, method="full", lr=1e-3)
    other.load(folder)
    torch.testing.assert_close(_seq_logp(other, samples), _seq_logp(learner, samples))


def test_bench_train_on_tiny_model(tiny_model_dir):
    from debate.training.bench import bench_train

    out = bench_train(str(tiny_model_dir), device="cpu", batch=4, objective="dpo", repeats=1)
    assert out["bench"] == "train" and out["device"] == "cpu" and out["batch"] == 4 and out["repeats"] == 1
    assert out["learner_s"] > 0 and out["plain_s"] > 0 and out["step_s"] > 0
    assert out["ratio"] == pytest.approx(out["plain_s"] / out["learner_s"], rel=0.05)
    assert out["ratio_step"] == pytest.approx(out["step_s"] / out["learner_s"], rel=0.05)
    assert out["unshared_s"] > 0 and out["shared_s"] > 0
    assert out["ratio_unshared"] == pytest.approx(out["plain_s"] / out["unshared_s"], rel=0.05)
    assert out["share_prompts"] is True and out["learner_s"] == out["shared_s"]  # auto: shared on a CPU


def test_bench_generate_on_tiny_model(tiny_model_dir):
    from debate.training.bench_generate import bench_generate, rollout_requests

    reqs = rollout_requests(3, 2, 5)
    assert len(reqs) == 12 and reqs[0].messages == reqs[1].messages and reqs[0].seed != reqs[1].seed
    out = bench_generate(str(tiny_model_dir), device="cpu", questions=3, samples=2, max_new_tokens=5, repeats=1,
                         autocast="bfloat16")
    assert out["bench"] == "generate" and out["rows"] == 12 and out["autocast"] == "bfloat16"
    assert 0 < out["generate_tokens"] <= 60 and 0 < out["plain_tokens"] <= 60
    assert out["generate_tok_s"] > 0 and out["plain_generate_tok_s"] > 0 and out["shared_f32_tok_s"] > 0
    assert out["ratio"] == pytest.approx(out["generate_tok_s"] / out["plain_generate_tok_s"], rel=0.01)
    off = bench_generate(str(tiny_model_dir), device="cpu", questions=2, samples=2, max_new_tokens=5, repeats=1,
                         autocast="off")
    assert off["autocast"] == "off" and off["generate_tok_s"] == off["shared_f32_tok_s"]


def test_share_prompts_follows_the_config_and_the_device(tiny_model_dir):
    from debate.backends.hf import TransformersBackend
    from debate.training.config import TrainConfig
    from debate.training.learner import Learner

    def shares(setting: str) -> bool:
        backend = TransformersBackend(tiny_model_dir, device="cpu", dtype="float32", name="t")
        return Learner(backend, TrainConfig(share_prompts=setting, device="cpu")).share_prompts

    assert shares("auto") and shares("on") and not shares("off")


def test_the_learners_policy_generates_under_the_configs_autocast(tiny_model_dir, monkeypatch):
    import torch

    import debate.precision as precision
    from debate.configs import PolicyConfig
    from debate.training.config import TrainConfig
    from debate.training.server import LearnerServer

    def autocast(setting: str, native: bool = False):
        monkeypatch.setattr(precision, "cpu_bf16_native", lambda: native)
        server = LearnerServer(PolicyConfig("current", model=str(tiny_model_dir), device="cpu", dtype="float32"),
                               TrainConfig(generate_autocast=setting, device="cpu"))
        assert next(server.backend.model.parameters()).dtype == torch.float32  # the master weights stay float32
        return server.backend.autocast

    # auto: bfloat16 only where the CPU runs it natively (emulated bfloat16 is several times slower)
    assert autocast("auto", native=True) == torch.bfloat16 and autocast("auto", native=False) is None
    assert autocast("off", native=True) is None and autocast("bfloat16") == torch.bfloat16


def test_load_survives_a_kill_between_renames(tiny_model_dir, tmp_path):
    learner = _learner(tiny_model_dir)
    folder = learner.save(tmp_path / "ckpt", iteration=5, extra={})
    folder.rename(tmp_path / ".ckpt.old")  # what a kill after moving the old one aside leaves
    (tmp_path / ".ckpt.tmp-1").mkdir()  # and a half-written new one, ignored
    assert _learner(tiny_model_dir).load(folder)["iteration"] == 5
