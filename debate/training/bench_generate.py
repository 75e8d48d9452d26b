"""`debate bench generate`: the learner's policy writing a rollout's speeches, against a plain batched
`model.generate` of the same float32 model on the same prompts, in one process.

A rollout asks for `samples` speeches per question and side, so its prompts come in repeats. The backend
runs each distinct prompt's prefill once (`prefix_cache.prompt_cache`) and, in the learner's shared layout,
generates under `generate_autocast` (bfloat16 where the hardware runs it natively); the baseline prefills
every row and runs in float32, as the learner's policy did before both. `shared_f32_tok_s` isolates the
first of the two. Speeches are sampled (temperature 1, each row's own seed) and stop at end of sequence, so
the paths' texts, and so their token counts, differ: the rates are tokens per second.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from debate.backends.base import GenRequest, Sampling


def rollout_requests(questions: int, samples: int, max_new_tokens: int) -> list[GenRequest]:
    """The first speeches of `questions` one-round simultaneous debates of the easy synthetic set, each
    question's two sides `samples` times, as the self-play presets ask for them."""
    from debate.prompts import debater_messages, load_prompts
    from debate.protocols import get_protocol
    from debate.synthetic import generate

    protocol, prompts = get_protocol("simultaneous", 1, 32), load_prompts("default")
    sampling = Sampling(temperature=1.0, max_new_tokens=max_new_tokens)
    return [GenRequest(debater_messages(prompts, "default", protocol, q, q.passage or "", side, []), sampling,
                       seed=1000 * i + 10 * side + k)
            for i, q in enumerate(generate(questions, seed=1234, difficulty="easy")) for side in (0, 1)
            for k in range(samples)]


def _tokens(backend: Any, rows: Sequence[Sequence[int]]) -> int:
    return sum(next((j for j, t in enumerate(r) if t in backend.eos_ids), len(r)) for r in rows)


def _plain(backend: Any, requests: Sequence[GenRequest]) -> int:
    """The baseline: every row prefilled, the model's own dtype, one sampled `model.generate` per `max_batch`
    rows; returns the new tokens up to end of sequence."""
    from transformers import LogitsProcessorList

    from debate.backends.row_sampling import RowSampler

    total = 0
    for k in range(0, len(requests), backend.max_batch):
        chunk = requests[k : k + backend.max_batch]
        batch = backend.encode([backend.render(r.messages) for r in chunk])
        sampler = RowSampler([r.sampling.temperature for r in chunk], [r.sampling.top_p for r in chunk],
                             [r.seed for r in chunk])
        with torch.inference_mode():
            out = backend.model.generate(**batch, max_new_tokens=chunk[0].sampling.max_new_tokens,
                                         pad_token_id=backend.tokenizer.pad_token_id, do_sample=False, temperature=None,
                                         top_p=None, top_k=None, logits_processor=LogitsProcessorList([sampler]))
        total += _tokens(backend, out[:, batch["input_ids"].shape[1] :].tolist())
    return total


def _rate(fn: Any, device: str, repeats: int) -> tuple[float, int]:
    """Best tokens per second of `fn` (which returns its token count: the same every run, each row's seed fixed)
    over `repeats` runs after a warm-up (`bench._time`)."""
    from debate.training.bench import _time

    counts: list[int] = []
    seconds = _time(lambda: counts.append(fn()), device, repeats)
    return counts[-1] / seconds, counts[-1]


def bench_generate(model_name: str = "embedded", device: str = "auto", questions: int = 16, samples: int = 2,
                   max_new_tokens: int = 40, repeats: int = 2, autocast: str = "auto", max_batch: int = 64) -> dict:
    """Tokens per second of the learner's policy generating `questions` x 2 sides x `samples` speeches (`ratio`
    = generate_tok_s / plain_generate_tok_s), with the float32 model loaded as the learner holds it; one dict,
    printed as a JSON line by the CLI."""
    from debate.backends.hf import TransformersBackend
    from debate.embedded import resolve_model
    from debate.precision import describe, generation_autocast

    backend = TransformersBackend(resolve_model(model_name), device=device, dtype="float32", name="bench",
                                  max_batch=max_batch)
    amp = generation_autocast(backend.device, autocast)
    requests = rollout_requests(questions, samples, max_new_tokens)

    def ours(dtype: Any) -> int:
        backend.autocast = dtype
        return sum(r.n_tokens for r in backend.generate(requests))

    plain, plain_tokens = _rate(lambda: _plain(backend, requests), backend.device, repeats)
    shared, shared_tokens = _rate(lambda: ours(None), backend.device, repeats)
    new, tokens = _rate(lambda: ours(amp), backend.device, repeats) if amp is not None else (shared, shared_tokens)
    return {"bench": "generate", "model": model_name, "device": backend.device,
            "autocast": str(amp).removeprefix("torch.") if amp else "off", "questions": questions, "samples": samples,
            "rows": len(requests), "max_new_tokens": max_new_tokens, "repeats": repeats, "max_batch": max_batch,
            "generate_tokens": tokens, "plain_tokens": plain_tokens,
            "generate_tok_s": round(new, 2), "shared_f32_tok_s": round(shared, 2),
            "plain_generate_tok_s": round(plain, 2), "ratio": round(new / plain, 3),
            "ratio_shared_f32": round(shared / plain, 3), "torch_threads": torch.get_num_threads(), **describe()}
