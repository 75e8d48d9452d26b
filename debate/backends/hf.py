"""The transformers backend (CPU and GPU): batched generation with left padding, and answer scoring."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import torch

from debate.backends.base import GenRequest, GenResult, ScoreRequest, ScoreResult, count_with, render_chat, truncate_with
from debate.backends.prefix_cache import CACHE_ARG, last_logits_shared_head, prompt_cache
from debate.backends.row_sampling import RowSampler
from debate.precision import device_type, serving_dtype


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device: cpu")
    return device


class TransformersBackend:
    """A causal LM from a local folder, driven through `model.generate`."""

    # generate under this autocast dtype (None: the model's own dtype); the learner sets it for its float32 model
    autocast: torch.dtype | None = None

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        dtype: str = "auto",
        threads: int | None = None,
        name: str | None = None,
        max_batch: int = 32,
        model=None,
        tokenizer=None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        # Ray sets OMP_NUM_THREADS to an actor's CPU count (often 1); threads come from config instead.
        torch.set_num_threads(threads or default_threads())
        self.device = pick_device(device)
        # auto: what this hardware runs well (float32 on a CPU without native bfloat16), or the dtype a
        # trained judge was validated in; `self.dtype` records the choice
        self.dtype = serving_dtype(self.device, dtype, path)
        start = time.perf_counter()
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(path))
        self.model = model or AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, self.dtype))
        self.model.to(self.device).eval()
        if model is not None:  # a model passed in keeps its own dtype
            self.dtype = str(self.model.dtype).removeprefix("torch.")
        self.load_seconds = time.perf_counter() - start
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = name or Path(str(path)).name
        self.max_batch = max_batch
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(int(i) for i in ids))

    def render(self, messages, prefix: str = "", generation_prompt: bool = True) -> str:
        return render_chat(self.tokenizer, messages, prefix, generation_prompt)

    def encode(self, prompts: list[str]) -> dict:
        """Left-padded token tensors on the model's device."""
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        """One `generate` call per group of requests sharing max_new_tokens (at most `max_batch` rows each).

        Temperature, top-p and seed are per row (see `RowSampler`), so a request's text is the same
        whatever other requests share its batch. Requests with the same prompt (a question's samples) share
        one prefill (`prompt_cache`): they are sorted next to each other within their group.
        """
        prompts = [self.render(r.messages) for r in requests]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[r.sampling.max_new_tokens].append(i)
        results: list[GenResult | None] = [None] * len(requests)
        for max_new, rows in groups.items():
            rows = sorted(rows, key=lambda i: prompts[i])
            for k in range(0, len(rows), self.max_batch):
                chunk = rows[k : k + self.max_batch]
                out = self._generate_group([requests[i] for i in chunk], [prompts[i] for i in chunk], max_new)
                for i, res in zip(chunk, out):
                    results[i] = res
        return [r for r in results if r is not None]

    def _generate_group(self, reqs: list[GenRequest], prompts: list[str], max_new: int) -> list[GenResult]:
        from transformers import LogitsProcessorList

        distinct = list(dict.fromkeys(prompts))
        place = {p: k for k, p in enumerate(distinct)}
        rows = [place[p] for p in prompts]
        batch = self.encode(distinct)
        sampler = RowSampler([r.sampling.temperature for r in reqs], [r.sampling.top_p for r in reqs], [r.seed for r in reqs])
        with torch.autocast(device_type(self.device), dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            cache = prompt_cache(self.model, batch["input_ids"], batch["attention_mask"], rows)
            index = torch.tensor(rows, device=self.device)
            # greedy decoding over the sampler's noisy logits: an argmax per row is that row's sample
            out = self.model.generate(
                **{k: v[index] for k, v in batch.items()},
                max_new_tokens=max_new,
                pad_token_id=self.tokenizer.pad_token_id,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=LogitsProcessorList([sampler]),
                **({CACHE_ARG: cache} if cache is not None else {}),
            )
        new = out[:, batch["input_ids"].shape[1] :].tolist()
        return [self._result(row, max_new) for row in new]

    def _result(self, row: list[int], max_new: int) -> GenResult:
        n = len(row)
        for j, tok in enumerate(row):
            if tok in self.eos_ids:
                n = j
                break
        text = self.tokenizer.decode(row[:n], skip_special_tokens=True).strip()
        return GenResult(text=text, n_tokens=n, hit_limit=n >= max_new)

    @torch.inference_mode()
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-probabilities of each candidate's first token right after the assistant prefix."""
        results: list[ScoreResult] = []
        for k in range(0, len(requests), self.max_batch):
            results.extend(self._score_chunk(requests[k : k + self.max_batch]))
        return results

    def _score_chunk(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        prompts = [self.render(r.messages, prefix=r.prefix) for r in requests]
        rows = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        logits = last_logits_shared_head(self.model, rows, self.tokenizer.pad_token_id)  # the shared head once
        if logits is None:
            batch = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt")  # the rows already tokenized, padded left
            logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}, logits_to_keep=1).logits[:, -1, :]
        logits = logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        results = []
        for i, r in enumerate(requests):
            ids = [self.tokenizer.encode(c, add_special_tokens=False)[0] for c in r.candidates]
            if len(set(ids)) != len(ids):
                raise ValueError(
                    f"answer candidates {r.candidates} share their first token in {self.name}'s tokenizer, so "
                    f"they cannot be told apart; use candidates that tokenize to different first tokens"
                )
            values = tuple(float(logp[i, t]) for t in ids)
            top = torch.topk(logp[i], 5)
            tops = tuple((self.tokenizer.decode([int(t)]), round(float(v), 4)) for v, t in zip(top.values, top.indices))
            results.append(ScoreResult(logprobs=values, top=tops))
        return results

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return count_with(self.tokenizer, texts)

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        return truncate_with(self.tokenizer, texts, max_tokens)

    # adapters: PEFT injects LoRA layers into `self.model` in place, so `generate` and `score` use them unchanged
    _peft = None  # the PeftModel wrapping self.model once an adapter was set
    _loaded: tuple[str, int] | None = None  # (folder, version) of the adapter in self._peft, switched on or off
    _last_version = 0
    adapter: tuple[str, int] | None = None  # (folder, version) in use; None: the base model

    def set_adapter(self, path: str | Path | None, version: int | None = None) -> int | None:
        """Generate and score with the PEFT LoRA adapter in folder `path` from the next request on (None: the
        base model again), as self-play hands the generating policy the learner's new adapter.

        `version` names the adapter (default: one more than the last), as for the vllm backend: the same folder
        and version again switches the loaded adapter back on without reading it; another is loaded next to
        the old one, made active, and the old one deleted. Returns the version in use."""
        import json

        from peft import PeftModel

        if self._peft is None and isinstance(self.model, PeftModel):
            raise RuntimeError(f"policy {self.name}: its model is a PEFT model trained in this process (the learner's); "
                               f"it takes no adapter from a folder")
        if path is None:
            if self._peft is not None:
                self._peft.base_model.disable_adapter_layers()
            self.adapter = None
            return None
        folder = Path(path)
        config = folder / "adapter_config.json"
        if not config.exists():
            raise FileNotFoundError(f"{folder} is not a PEFT adapter folder (no adapter_config.json); save one with "
                                    f"Learner.save_adapter or PeftModel.save_pretrained")
        peft_type = str(json.loads(config.read_text()).get("peft_type", ""))
        if peft_type.upper() != "LORA":
            raise ValueError(f"{config}: peft_type is {peft_type!r}; the transformers backend takes LoRA adapters only")
        version = self._last_version + 1 if version is None else int(version)
        if version < 1:
            raise ValueError(f"adapter version must be >= 1, got {version}")
        key = (str(folder.resolve()), version)
        # PEFT initialises the new LoRA weights at random before loading them: on a forked random state, so that
        # loading an adapter leaves this process's random numbers (a learner's, in-process) where they were
        cuda = [torch.device(self.device).index or 0] if str(self.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda):
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, str(folder), adapter_name=f"v{version}",
                                                       torch_device=str(self.device))
            elif self._loaded != key:
                old = self._peft.active_adapter
                name = f"v{version}" if old != f"v{version}" else f"v{version}-again"  # a new folder, an old version
                self._peft.load_adapter(str(folder), adapter_name=name, torch_device=str(self.device))
                self._peft.set_adapter(name, inference_mode=True)
                self._peft.delete_adapter(old)
        self._peft.base_model.enable_adapter_layers()
        self._peft.eval()
        self._loaded, self.adapter = key, (str(folder), version)
        self._last_version = max(self._last_version, version)
        return version


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)
