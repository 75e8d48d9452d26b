"""The vLLM backend (GPU): fast batched generation. vLLM is imported lazily, only here.

Not testable on a CPU-only machine; the tests check the install hint and skip the rest when vLLM is
missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from debate.backends.base import GenRequest, GenResult, ScoreRequest, ScoreResult

INSTALL_HINT = "the vllm backend needs vLLM and a CUDA GPU: pip install 'debate-harness[vllm]'"


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return vllm


class VLLMBackend:
    def __init__(self, path: str | Path, name: str | None = None, dtype: str = "auto", gpu_memory_utilization: float = 0.85) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(path), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization)
        self.tokenizer = self.llm.get_tokenizer()
        self.name = name or Path(str(path)).name
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)

    def render(self, messages, prefix: str = "") -> str:
        chat = [{"role": r, "content": c} for r, c in messages]
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + prefix

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        params = [
            self._vllm.SamplingParams(
                temperature=r.sampling.temperature, top_p=r.sampling.top_p, max_tokens=r.sampling.max_new_tokens, seed=r.seed
            )
            for r in requests
        ]
        outs = self.llm.generate([self.render(r.messages) for r in requests], params, use_tqdm=False)
        results = []
        for r, o in zip(requests, outs):
            c = o.outputs[0]
            n = len(c.token_ids)
            results.append(GenResult(text=c.text.strip(), n_tokens=n, hit_limit=c.finish_reason == "length"))
        return results

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Each candidate appended to the prompt; its prompt log-probability is the candidate's score."""
        prompts, index = [], []
        for i, r in enumerate(requests):
            base = self.render(r.messages, prefix=r.prefix)
            for cand in r.candidates:
                prompts.append(base + cand)
                index.append(i)
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        values: dict[int, list[float]] = {}
        for i, o in zip(index, outs):
            last_token = o.prompt_token_ids[-1]
            values.setdefault(i, []).append(float(o.prompt_logprobs[-1][last_token].logprob))
        return [ScoreResult(logprobs=tuple(values[i]), top=()) for i in range(len(requests))]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts]

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        return [self.tokenizer.decode(self.tokenizer.encode(t, add_special_tokens=False)[:m]) for t, m in zip(texts, max_tokens)]
