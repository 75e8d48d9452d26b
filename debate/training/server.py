"""Where the learner lives, next to the generating policy (DESIGN.md, Ray). Ray is not imported here.

- shared: one process (one Ray actor) holds the generating policy and its learner, so no weights move
  between generation and training: the CPU default.
- separate: the learner's actor holds the trainable model (LoRA) and trains, on `cuda` where there is
  one; the generating policy is an ordinary policy actor (transformers, or vLLM) loaded from the same
  warm-started debater, and after each update (and after a checkpoint is loaded on resume) the learner
  saves its adapter and the driver hands the folder, with the adapter's version, to the generating
  policy (`SeparateLearner.hand_over`). The reference generations switch the adapter off for one call.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from debate.actors import PolicyServer
from debate.backends.base import GenRequest, GenResult, Messages
from debate.configs import ConfigError, PolicyConfig
from debate.training.config import TrainConfig
from debate.training.samples import Sample


class LearnerServer(PolicyServer):
    """A policy whose generations come from the learner's current weights, or from the reference
    (the warm-started model: the adapter switched off) when `reference` is asked for."""

    def __init__(self, cfg: PolicyConfig, train: TrainConfig, backend: Any = None) -> None:
        import torch

        from debate.precision import generation_autocast
        from debate.training.learner import Learner

        super().__init__(cfg, backend)
        torch.manual_seed(train.seed)  # the adapter's initial weights are part of the run's seed
        self.learner = Learner(self.backend, train)
        if hasattr(self.backend, "autocast"):  # the transformers backend generates from the float32 master weights
            self.backend.autocast = generation_autocast(str(self.learner.device), train.generate_autocast)

    @contextmanager
    def _reference(self) -> Iterator[None]:
        model = self.backend.model
        if hasattr(model, "disable_adapter"):  # LoRA: the reference is the base with the adapter off
            with model.disable_adapter():
                yield
            return
        ref = self.learner.reference  # full fine-tuning: a frozen copy of the starting weights
        if ref is None:
            raise RuntimeError("the learner holds no reference model to generate from")
        self.backend.model = ref
        try:
            yield
        finally:
            self.backend.model = model

    def generate(self, requests: Sequence[GenRequest], reference: bool = False) -> list[GenResult]:
        with self._reference() if reference else nullcontext():
            return self.backend.generate(requests)

    def render(self, messages: Sequence[Messages]) -> list[str]:
        """Prompts exactly as `generate` renders them (chat template and generation prompt)."""
        return [self.backend.render(m) for m in messages]

    def update(self, samples: Sequence[Sample]) -> dict:
        # the loop measures KL on held-out speeches after the update, so the learner's own pass is skipped
        return self.learner.update(list(samples), kl=False)

    def kl(self, samples: Sequence[Sample]) -> float:
        return float(self.learner.kl_to_reference(list(samples))) if samples else 0.0

    def kl_each(self, samples: Sequence[Sample]) -> list[float]:
        """Per speech, its KL to the reference (the spread behind `kl`'s mean)."""
        return self.learner.sequence_kls(list(samples))

    def version(self) -> int:
        """The version of the weights being trained (0 before any update), which this process generates from."""
        return self.learner.version

    def save_adapter(self, folder: str) -> tuple[str, int]:
        """The current adapter, written afresh in `folder`, for a generating policy to load; with its version."""
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        path, version = self.learner.save_adapter(Path(folder))
        return str(path), version

    def save(self, folder: str, iteration: int, extra: dict) -> None:
        self.learner.save(Path(folder), iteration, extra)

    def load(self, folder: str) -> dict:
        return self.learner.load(Path(folder))

    def export(self, folder: str) -> str:
        """The current policy as a plain model folder (the adapter merged into a copy), for tournaments
        (`model: debater:RUN`); written to a temporary folder first, so a kill leaves no half model."""
        import copy
        import shutil

        out = Path(folder)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model = self.backend.model
        merged = copy.deepcopy(model).merge_and_unload() if hasattr(model, "merge_and_unload") else model
        merged.save_pretrained(tmp)
        self.backend.tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        return str(out)


class GeneratorServer(PolicyServer):
    """The separate layout's generating policy: an ordinary policy (transformers or vLLM backend) that serves
    the adapter handed to it by path with its version (`set_adapter`), or, with `reference`, the base model:
    the adapter is switched off for that call, so the evaluation against the starting policy needs no
    second copy of the model."""

    def __init__(self, cfg: PolicyConfig, backend: Any = None, driver: Optional[dict] = None) -> None:
        super().__init__(cfg, backend, driver)
        self.adapter: Optional[tuple[str, int]] = None  # (folder, version) served; None: the base model

    def set_adapter(self, path: Optional[str], version: Optional[int] = None) -> Optional[int]:
        served = super().set_adapter(path, version)
        self.adapter = None if path is None or served is None else (str(path), int(served))
        return served

    def version(self) -> int:
        """The version of the adapter served (0: none, the warm-started model as loaded)."""
        return self.adapter[1] if self.adapter else 0

    def generate(self, requests: Sequence[GenRequest], reference: bool = False) -> list[GenResult]:
        if not reference or self.adapter is None:
            return self.backend.generate(requests)
        path, version = self.adapter
        self.backend.set_adapter(None)
        try:
            return self.backend.generate(requests)
        finally:
            self.backend.set_adapter(path, version)  # the same folder and version: switched back on, not reloaded


class SeparateLearner:
    """The driver's handle on the separate layout, with the calls of a `LearnerHandle` on the shared one:
    `call` goes to the learner (`version` to the generating policy: what it serves), `policy` gives views
    of the generating policy. After `update` and `load` the learner's adapter is handed over, so the next
    generations come from the weights just trained or restored."""

    layout = "separate"

    def __init__(self, learner: Any, generator: Any, folder: Optional[str | Path] = None) -> None:
        self.learner, self.generator = learner, generator  # LearnerHandles on a LearnerServer and a GeneratorServer
        self.folder = Path(folder) if folder is not None else None  # where adapters are handed over: results/RUN/adapters
        self.context_length = generator.context_length
        self.device, self.dtype = generator.device, generator.dtype

    def call(self, method: str, *args: Any) -> Any:
        if method == "version":
            return self.generator.call("version")
        out = self.learner.call(method, *args)
        if method in ("update", "load"):
            self.hand_over()
        return out

    def policy(self, name: str, reference: bool = False) -> Any:
        return self.generator.policy(name, reference)

    def hand_over(self) -> int:
        """Make the generating policy serve the learner's current weights: the adapter saved in
        `folder/version-NNNN` and set with its version (version 0, no update yet: no adapter, since a fresh
        LoRA adapter changes nothing); older hand-over folders are removed. Returns the version served."""
        import shutil

        version = self.learner.call("version")
        if self.generator.call("version") == version:
            return version
        if version == 0:
            self.generator.call("set_adapter", None, None)
            return 0
        if self.folder is None:
            raise RuntimeError("SeparateLearner.folder is not set: the adapter has nowhere to go")
        path, version = self.learner.call("save_adapter", str(self.folder / f"version-{version:04d}"))
        served = self.generator.call("set_adapter", path, version)
        if served != version:
            raise RuntimeError(f"the generating policy serves adapter version {served} after being handed version {version}")
        for old in self.folder.glob("version-*"):
            if old != Path(path):
                shutil.rmtree(old, ignore_errors=True)
        return version

    def close(self) -> None:
        self.generator.close()
        self.learner.close()


def uses_cuda(device: str) -> bool:
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def resolve_layout(cfg: TrainConfig, handle: Any = None) -> str:
    """`cfg.learner` with `auto` resolved: separate when the learner's device is cuda and `generator_backend` is
    set, else shared. With a learner handle passed in (tests), its own layout, which the config must allow."""
    if handle is not None:
        layout = getattr(handle, "layout", "shared")
        if cfg.learner not in ("auto", layout):
            raise ConfigError(f"learner: the config asks for {cfg.learner}, but the learner passed in is {layout}")
        return layout
    if cfg.learner != "auto":
        layout = cfg.learner
    else:
        layout = "separate" if uses_cuda(cfg.device) and cfg.generator_backend is not None else "shared"
    if layout == "separate" and cfg.generator_backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            from debate.backends.vllm_backend import INSTALL_HINT

            raise ConfigError(f"generator_backend: vllm is not installed in this environment; {INSTALL_HINT}")
    return layout


def describe_layout(cfg: TrainConfig, layout: str) -> str:
    """One line for the run's log: where the learner trains and how weights reach the generating policy."""
    device = cfg.device if cfg.device != "auto" else "cuda" if uses_cuda("auto") else "cpu"
    if layout == "shared":
        return f"learner: shared (trains on {device} in the generating policy's actor; no weights move)"
    return (f"learner: separate (trains on {device}, float32; the generating policy, backend "
            f"{cfg.generator_backend or 'transformers'}, gets each new LoRA adapter by path with its version)")


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def generator_config(cfg: TrainConfig, learner_cfg: PolicyConfig) -> PolicyConfig:
    """The separate layout's generating policy: the learner's model and device, served in the backend's own
    dtype (`auto`: bfloat16 on a GPU, float32 on a CPU), taking adapters up to the learner's LoRA rank."""
    from dataclasses import replace

    backend = cfg.generator_backend or "transformers"
    rank = next((r for r in VLLM_LORA_RANKS if r >= cfg.lora_r), cfg.lora_r) if backend == "vllm" else 0
    return replace(learner_cfg, backend=backend, dtype="auto", max_lora_rank=rank)


def start_learner(cfg: TrainConfig, learner_cfg: PolicyConfig, layout: str, folder: Optional[str | Path] = None) -> Any:
    """The learner's handle in the given layout: a `LearnerHandle` on a `LearnerServer` (shared), or a
    `SeparateLearner` over a learner and a generating policy (separate); Ray actors when `cfg.use_ray`."""
    from debate.actors import LearnerHandle, driver_identity

    def handle(server: type, pcfg: PolicyConfig, *args: Any) -> LearnerHandle:
        if cfg.use_ray:
            return LearnerHandle.remote(pcfg, *args, server=server)
        return LearnerHandle(server=server(pcfg, *args))

    if layout == "shared":
        return handle(LearnerServer, learner_cfg, cfg)
    # the generating policy first: in one process, the learner's seed then comes after any model loading
    generator = handle(GeneratorServer, generator_config(cfg, learner_cfg), None, driver_identity() if cfg.use_ray else None)
    return SeparateLearner(handle(LearnerServer, learner_cfg, cfg), generator, folder)
