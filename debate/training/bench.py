"""Benchmark of the learner's update against a plain forward + backward of the same model and tokens, and against
a trainer's whole step (reference forward, forward, backward, optimizer step); the update also without sharing
its pairs' prompts."""

from __future__ import annotations

import time
from typing import Any

import torch

from debate.training.samples import Sample

PROMPT_TOKENS = 300
COMPLETION_TOKENS = 48
WORDS = ("the passage says that the red lantern hangs in the cellar while the blue key rests under the stair "
         "debater quote answer evidence because therefore however claim").split()


def _text(tokenizer: Any, n_tokens: int, offset: int) -> str:
    """Filler text of about n_tokens tokens (cut in token space, decoded back)."""
    words = [WORDS[(offset + 7 * i) % len(WORDS)] for i in range(n_tokens * 2)]
    ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids)


def synthetic_samples(backend: Any, batch: int) -> list[Sample]:
    """`batch` samples in groups of two with rewards +1 and -1 (so DPO gets batch / 2 pairs): prompts of
    about 300 tokens rendered with the chat template, 48-token completions."""
    tok = backend.tokenizer
    out = []
    for i in range(batch):
        q = i // 2
        prompt = backend.render([("system", "You are a debater."), ("user", _text(tok, PROMPT_TOKENS - 20, q))])
        reward = 1.0 if i % 2 == 0 else -1.0
        out.append(Sample(key=f"bench-{i}", transcript_id=f"t{i}", question_id=f"q{q}", side=0, role="debater_a",
                          turn=0, prompt=prompt, completion=_text(tok, COMPLETION_TOKENS, 3 * i + 1), reward=reward))
    return out


def _encoded(learner: Any, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, attention mask and labels (the completion only) of the samples, padded, on the learner's device."""
    from debate.training.logprobs import encode_pairs

    tok = learner.backend.tokenizer
    rows, starts = encode_pairs(tok, [s.prompt for s in samples], [s.completion for s in samples])
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), tok.pad_token_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (r, p) in enumerate(zip(rows, starts)):
        ids[i, : len(r)], attn[i, : len(r)] = torch.tensor(r), 1
        labels[i, p : len(r)] = torch.tensor(r[p:])
    return ids.to(learner.device), attn.to(learner.device), labels.to(learner.device)


def _plain_pass(learner: Any, batch: tuple[torch.Tensor, ...]) -> None:
    """A plain forward and backward of the policy on the tokens (labels on the completion only)."""
    ids, attn, labels = batch
    learner.model(input_ids=ids, attention_mask=attn, labels=labels).loss.backward()
    learner.model.zero_grad(set_to_none=True)


def _trainer_step(learner: Any, batch: tuple[torch.Tensor, ...], optimizer: torch.optim.Optimizer) -> None:
    """What any trainer of a KL-anchored objective pays: a no-grad reference forward of the same tokens, the
    policy's forward and backward, an optimizer step."""
    ids, attn, labels = batch
    model = learner.model
    with torch.no_grad():
        if learner.reference is not None:
            learner.reference(input_ids=ids, attention_mask=attn)
        else:
            with model.disable_adapter():
                model(input_ids=ids, attention_mask=attn)
    loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _time(fn: Any, device: str, repeats: int) -> float:
    from debate.precision import synchronize

    fn()  # warm-up: allocator, kernels, oneDNN primitives
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def bench_train(model_name: str = "embedded", device: str = "auto", batch: int = 8, objective: str = "dpo",
                repeats: int = 2) -> dict:
    """Seconds of one `Learner.update` on `batch` sequences, as the loop runs it (no KL pass), against two
    baselines on the same tokens in the same process (best of `repeats` after a warm-up): a plain forward and
    backward (`ratio` = plain_s / learner_s) and a trainer's whole step with the reference forward and the
    optimizer step (`ratio_step`). 1.0: the learner adds nothing. The samples come in pairs with one prompt
    each, as DPO's pairs do; `shared_s` times the update with each prompt run once for both speeches, which the
    plain pass, row by row, does not, and `unshared_s` with every row run whole, where the reference's forward,
    which a KL-anchored objective needs and the plain pass does not make, keeps the ratio below 1; `learner_s`
    is the one of the two that the loop uses on this device (`share_prompts: auto`: shared on a CPU only)."""
    from debate.backends.hf import TransformersBackend
    from debate.embedded import resolve_model
    from debate.training.config import TrainConfig
    from debate.training.learner import Learner

    backend = TransformersBackend(resolve_model(model_name), device=device, dtype="float32", name="bench")
    cfg = TrainConfig(objective=objective, batch=batch, epochs=1, device=backend.device)
    learner = Learner(backend, cfg)
    samples = synthetic_samples(backend, batch)
    default, seconds = learner.share_prompts, {}
    for share in (True, False):
        learner.share_prompts = share
        seconds[share] = _time(lambda: learner.update(samples, kl=False), backend.device, repeats)
    learner.share_prompts = default
    learner_s, shared_s, unshared_s = seconds[default], seconds[True], seconds[False]
    tokens = _encoded(learner, samples)
    plain_s = _time(lambda: _plain_pass(learner, tokens), backend.device, repeats)
    optimizer = torch.optim.AdamW(learner.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step_s = _time(lambda: _trainer_step(learner, tokens, optimizer), backend.device, repeats)
    return {"bench": "train", "device": backend.device, "objective": objective, "batch": batch, "repeats": repeats,
            "share_prompts": default, "learner_s": round(learner_s, 4), "plain_s": round(plain_s, 4),
            "ratio": plain_s / learner_s, "shared_s": round(shared_s, 4), "ratio_shared": plain_s / shared_s,
            "unshared_s": round(unshared_s, 4), "ratio_unshared": plain_s / unshared_s,
            "step_s": round(step_s, 4), "ratio_step": step_s / learner_s,
            "cpu": torch.backends.cpu.get_cpu_capability()}
