"""Training only the top layers of a judge, with the frozen lower layers run once per prompt.

With `train_layers: N` the lower layers never change, so their output for a prompt is the same at
every step and epoch. `FrozenPrefix` computes it once (no gradients) and keeps it; a training step then
runs only the top N layers, the final norm and the two letter logits. Measured here on the embedded
model (30 layers): a step of 4 debates in both orders costs ~1.5 s with 6 layers trained (~2.1 s with
8) instead of ~8.3 s for a whole-model float32 step, which buys the few hundred steps the judge needs
(its loss sits at 0.69 for ~150 steps before it falls) within the time budget.
The lower layers may run under bfloat16 autocast (`lower_dtype`; ~2.5x faster on a CPU with native
bfloat16, several times slower on one without, so `auto` picks it only where the hardware has it); only
their output is rounded: states are stored in the dtype the trained top layers run in, and training
validates the whole model at the end in the dtype the judge will be served in.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from judges.judge_data import Example, presentations


class FrozenPrefix:
    """Per (debate, order): the hidden states entering the top `top` layers, unpadded."""

    def __init__(self, scorer: Any, top: int, dtype: Optional[torch.dtype] = None) -> None:
        self.scorer = scorer
        self.model = scorer.backend.model
        self.layers = self.model.model.layers
        self.top = top
        # the lower layers' one pass under autocast to `dtype` (None: the model's own dtype)
        self.dtype = None if dtype in (None, self.model.dtype) else dtype
        self.split = len(self.layers) - top
        self.states: dict[tuple[str, int], torch.Tensor] = {}

    @contextmanager
    def _lower(self) -> Iterator[None]:
        """The model cut to its frozen lower layers, without the final norm."""
        inner = self.model.model
        norm = inner.norm
        inner.layers, inner.norm = self.layers[: self.split], torch.nn.Identity()
        try:
            yield
        finally:
            inner.layers, inner.norm = self.layers, norm

    @contextmanager
    def upper(self) -> Iterator[None]:
        """The model cut to its trained top layers (for steps on stored states); restored after."""
        inner = self.model.model
        inner.layers = self.layers[self.split :]
        try:
            yield
        finally:
            inner.layers = self.layers

    @torch.no_grad()
    def add(self, examples: Sequence[Example], batch: int = 8, desc: str = "", progress: bool = False) -> None:
        """Run the lower layers once over every example in both orders and keep the states."""
        todo = [ex for ex in examples if (ex.case.transcript.id, 0) not in self.states]
        bar = tqdm(total=len(todo), desc=desc or "lower layers", unit="debate", disable=not progress, dynamic_ncols=True)
        autocast = torch.autocast(self.model.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)
        keep = self.model.dtype  # states are stored in the dtype the top layers run in
        with self._lower(), autocast:
            for k in range(0, len(todo), batch):
                chunk = todo[k : k + batch]
                texts, _ = self.scorer.texts(chunk)
                enc = self.scorer.backend.encode(texts)
                hidden = self.model.model(**enc, use_cache=False).last_hidden_state
                lengths = enc["attention_mask"].sum(dim=1).tolist()
                for r, n in enumerate(lengths):
                    ex = chunk[r // 2]
                    self.states[(ex.case.transcript.id, r % 2)] = hidden[r, hidden.shape[1] - int(n) :].to(keep).clone()
                bar.update(len(chunk))
        bar.close()

    def rows(self, examples: Sequence[Example], orders: Optional[Sequence[int]] = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Stored states in the order `LetterScorer.texts` would give the prompts, and the correct letters."""
        shown = presentations(examples, orders)
        states = [self.states[(ex.case.transcript.id, order)] for ex, order, _ in shown]
        return states, torch.tensor([target for _, _, target in shown])

    def logits(self, states: list[torch.Tensor], autocast: Optional[torch.dtype] = None) -> torch.Tensor:
        """Letter logits from stored states: left-padded, run through the top layers (call inside `upper`)."""
        width = max(h.shape[0] for h in states)
        x = states[0].new_zeros(len(states), width, states[0].shape[1])
        mask = torch.zeros(len(states), width, dtype=torch.long, device=x.device)
        for r, h in enumerate(states):
            x[r, width - h.shape[0] :] = h
            mask[r, width - h.shape[0] :] = 1
        with torch.autocast(x.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            out = self.model(inputs_embeds=x, attention_mask=mask, logits_to_keep=1, use_cache=False).logits[:, -1, :]
        return out[:, self.scorer.letter_ids].float()
