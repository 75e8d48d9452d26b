"""`debate bench engine`: the engine (Ray actor) against a plain batched `model.generate` loop.

Both run the same debater prompts greedily on the same model in one process tree; the line printed
is JSON with tokens/s of each, their ratio, and the model's cold (GGUF) and warm (cache) load times.
"""

from __future__ import annotations

import json
import tempfile
import time
from typing import Any, Sequence

import torch

from debate.configs import EntryConfig, PolicyConfig, RayConfig
from debate.engine import Debate, Engine
from debate.prompts import debater_messages, load_prompts
from debate.protocols import get_protocol
from debate.quotes import QuoteRules
from debate.records import Seat, Transcript
from debate.store import Store
from debate.synthetic import generate as synthetic_questions


def _debates(n: int, protocol) -> list[Debate]:
    out = []
    for i, q in enumerate(synthetic_questions(n, seed=1234, difficulty="medium")):
        t = Transcript(id=f"bench-{i}", run="bench", match="bench", question_id=q.id, protocol=protocol.name,
                       seats=(Seat("consultant", "bench", i % 2),))
        out.append(Debate(t, q, protocol))
    return out


def _plain_generate(model: Any, tokenizer: Any, messages: list, max_new_tokens: int) -> int:
    """The baseline: one batched greedy `model.generate`, counting new tokens up to end of sequence."""
    texts = [tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in m], tokenize=False, add_generation_prompt=True) for m in messages]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new = out[:, batch["input_ids"].shape[1]:]
    eos = tokenizer.eos_token_id
    total = 0
    for row in new.tolist():
        total += row.index(eos) if eos in row else len(row)
    return total


def load_times(model_name: str) -> dict:
    """Seconds to load the embedded model from its GGUF file (cold) and from the safetensors cache (warm)."""
    from transformers import AutoModelForCausalLM

    from debate.embedded import gguf_path, resolve_model

    out = {}
    if model_name == "embedded":
        g = gguf_path()
        t = time.perf_counter()
        AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name)
        out["cold_load_s"] = round(time.perf_counter() - t, 2)
    path = resolve_model(model_name)
    t = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(str(path))
    out["warm_load_s"] = round(time.perf_counter() - t, 2)
    return out


def bench_engine(batches: Sequence[int] = (16,), max_new_tokens: int = 48, model: str = "embedded", repeats: int = 2,
                 device: str = "auto") -> list[dict]:
    """One JSON line per batch size: the engine (a Ray actor with `max_batch` = the batch size) against a
    plain batched `model.generate` in the driver, on the same device and dtype (what `auto` picks there)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from debate.actors import start_policies
    from debate.backends.hf import pick_device
    from debate.embedded import resolve_model
    from debate.precision import describe, serving_dtype, synchronize

    loads = load_times(model)
    path = resolve_model(model)
    device = pick_device(device)
    dtype = serving_dtype(device, "auto", path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = "left"
    lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype)).to(device).eval()
    protocol = get_protocol("consultancy", rounds=1, word_limit=10_000)
    prompts = load_prompts("default")
    entry = EntryConfig("bench", "bench", temperature=0.0, max_new_tokens=max_new_tokens)
    gpus = 1.0 if device.startswith("cuda") else 0.0
    policies = start_policies([PolicyConfig("bench", model=model, device=device, dtype=dtype, max_batch=max(batches),
                                            num_gpus=gpus * 0.5)], RayConfig())
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        for batch in batches:
            messages = [debater_messages(prompts, "default", protocol, d.question, d.question.passage or "", d.transcript.seats[0].side, [])
                        for d in _debates(batch, protocol)]
            best_plain = best_engine = 0.0
            tokens_plain = tokens_engine = 0
            for r in range(repeats):
                t = time.perf_counter()
                tokens_plain = _plain_generate(lm, tokenizer, messages, max_new_tokens)
                synchronize(device)
                best_plain = max(best_plain, tokens_plain / (time.perf_counter() - t))
                debates = _debates(batch, protocol)
                engine = Engine(policies, [entry], prompts, QuoteRules("tags+recite"), store=store)
                t = time.perf_counter()
                engine.run(debates, progress=False)
                elapsed = time.perf_counter() - t
                tokens_engine = sum(s.n_tokens for d in debates for s in d.speeches)
                best_engine = max(best_engine, tokens_engine / elapsed)
            line = {
                "bench": "engine", "model": model, "device": device, "dtype": dtype, "batch": batch,
                "max_new_tokens": max_new_tokens, "repeats": repeats, "engine_tokens": tokens_engine, "plain_tokens": tokens_plain,
                "engine_tok_s": round(best_engine, 2), "plain_generate_tok_s": round(best_plain, 2),
                "ratio": round(best_engine / best_plain, 3), "torch_threads": torch.get_num_threads(), **describe(), **loads,
            }
            print(json.dumps(line), flush=True)
            lines.append(line)
    return lines

