"""The generating policy and its learner in one process: on a CPU machine one Ray actor holds both, so
no weights move between generation and training (DESIGN.md, Ray). Ray is not imported here."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Sequence

from debate.actors import PolicyServer
from debate.backends.base import GenRequest, GenResult, Messages
from debate.configs import PolicyConfig
from debate.training.config import TrainConfig
from debate.training.samples import Sample


class LearnerServer(PolicyServer):
    """A policy whose generations come from the learner's current weights, or from the reference
    (the warm-started model: the adapter switched off) when `reference` is asked for."""

    def __init__(self, cfg: PolicyConfig, train: TrainConfig, backend: Any = None) -> None:
        import torch

        from debate.training.learner import Learner

        super().__init__(cfg, backend)
        torch.manual_seed(train.seed)  # the adapter's initial weights are part of the run's seed
        self.learner = Learner(self.backend, train)

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
