"""The learner's shared-prompt forward (each distinct prompt run once, its cache handed to its completions)
gives the log-probs and gradients of running every row whole."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from debate.training.logprobs import completion_logps
from debate.training.samples import Sample

SPEECHES = ["The red lantern is in the cellar.", "Answer: B", "Debater for A: <quote>the cellar</quote> says so",
            "A B A B A B A B A B A B"]


def _backend(folder):
    from debate.backends.hf import TransformersBackend

    return TransformersBackend(folder, device="cpu", dtype="float32", threads=1, name="tiny")


def _samples(backend) -> list[Sample]:
    """Three prompts of different lengths; the first has three speeches, the second two (one cut off at a limit,
    its eos never scored), the third one; mixed in order, as a shuffled micro-batch holds them."""
    prompts = [backend.render([("system", "You argue."), ("user", f"Where is the lantern? {'A B ' * k}")])
               for k in (1, 5, 9)]
    plan = [(0, 0), (1, 1), (0, 2), (2, 3), (1, 0), (0, 3)]
    out = [Sample(key=f"s{i}", transcript_id=f"t{i}", question_id=f"q{p}", side=0, role="debater_a", turn=0,
                  prompt=prompts[p], completion=SPEECHES[c]) for i, (p, c) in enumerate(plan)]
    out[4] = replace(out[4], ended=False)
    return out


def _logps_and_grads(model, tok, samples, share: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    logp, mask = completion_logps(model, tok, samples, "cpu", grad=True, share_prompts=share)
    weights = torch.linspace(1.0, 2.0, logp.shape[0])[:, None]  # a loss that weighs rows differently
    ((logp * weights).sum() / mask.sum()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), mask, grads


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prompts_match_whole_rows(tiny_model_dir, lora):
    backend = _backend(tiny_model_dir)
    model = backend.model
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights=False))  # non-zero B: the adapter shapes the cache
    model.eval()
    samples = _samples(backend)
    shared, mask_s, grads_s = _logps_and_grads(model, backend.tokenizer, samples, share=True)
    whole, mask_w, grads_w = _logps_and_grads(model, backend.tokenizer, samples, share=False)
    assert torch.equal(mask_s, mask_w)
    assert mask_s[4].sum() == len(backend.tokenizer(SPEECHES[0], add_special_tokens=False)["input_ids"])  # no eos
    assert torch.allclose(shared, whole, atol=1e-5), (shared - whole).abs().max()
    assert grads_s.keys() == grads_w.keys() and grads_s
    for name, g in grads_w.items():
        assert torch.allclose(grads_s[name], g, atol=1e-5, rtol=1e-4), name


def test_shared_prompts_one_token_completions(tiny_model_dir):
    """Empty speeches (only the eos scored): the prompt's last logits alone, no second forward."""
    backend = _backend(tiny_model_dir)
    samples = [replace(s, completion="") for s in _samples(backend)[:3]]
    with torch.no_grad():
        shared, mask = completion_logps(backend.model, backend.tokenizer, samples, "cpu", grad=False)
        whole, _ = completion_logps(backend.model, backend.tokenizer, samples, "cpu", grad=False, share_prompts=False)
    assert shared.shape == (3, 1) and mask.all()
    assert torch.allclose(shared, whole, atol=1e-5)


@pytest.mark.parametrize("share", [False, True])
def test_logits_over_a_span_match_per_row_positions(tiny_model_dir, monkeypatch, share):
    """Where transformers cannot take per-row positions (`logits_to_keep` 2-D, before 5.2x), the logits are taken
    over the span of the positions and picked per row: the same log-probs."""
    from debate.training import logprobs

    backend = _backend(tiny_model_dir)
    samples = _samples(backend)
    with torch.no_grad():
        want, mask = completion_logps(backend.model, backend.tokenizer, samples, "cpu", grad=False, share_prompts=share)
        monkeypatch.setattr(logprobs, "PER_ROW_KEEP", False)
        got, mask2 = completion_logps(backend.model, backend.tokenizer, samples, "cpu", grad=False, share_prompts=share)
    assert torch.equal(mask, mask2) and torch.allclose(got, want, atol=1e-5)
