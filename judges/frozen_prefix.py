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

import copy
import inspect
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from judges.judge_data import Example, presentations


# transformers renamed the cache argument of a model's forward (`past_key_values` -> `cache`); use what it takes
def _cache_arg() -> str:
    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


_CACHE_ARG = _cache_arg()


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
        """Run the lower layers once over every example in both orders and keep the states.

        Every judge prompt starts with the same tokens (system prompt, the start of the user turn); causal
        attention makes their states the same in every prompt, so they run once and each batch continues
        from their cache (about a quarter of the tokens of a templated debate)."""
        todo = [ex for ex in examples if (ex.case.transcript.id, 0) not in self.states]
        bar = tqdm(total=len(todo), desc=desc or "lower layers", unit="debate", disable=not progress, dynamic_ncols=True)
        autocast = torch.autocast(self.model.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)
        keep = self.model.dtype  # states are stored in the dtype the top layers run in
        tok = self.scorer.backend.tokenizer
        texts = [self.scorer.texts(todo[k : k + batch])[0] for k in range(0, len(todo), batch)]
        ids = [tok(chunk, add_special_tokens=False)["input_ids"] for chunk in texts]
        shared = _common_prefix([row for chunk in ids for row in chunk])
        device = self.model.device
        with self._lower(), autocast:
            cache, head = None, None
            if shared:
                out = self.model.model(input_ids=torch.tensor([shared], device=device), use_cache=True)
                cache, head = getattr(out, "past_key_values", None) or out.cache, out.last_hidden_state[0].to(keep)
            for c, k in enumerate(range(0, len(todo), batch)):
                chunk = todo[k : k + batch]
                rows = [row[len(shared) :] for row in ids[c]]
                width = max(len(r) for r in rows)
                input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width + len(shared)), dtype=torch.long)
                mask[:, : len(shared)] = 1
                for r, row in enumerate(rows):  # right-padded: real tokens keep contiguous positions after the shared ones
                    input_ids[r, : len(row)] = torch.tensor(row)
                    mask[r, len(shared) : len(shared) + len(row)] = 1
                past = None
                if cache is not None:
                    past = copy.deepcopy(cache)
                    past.batch_repeat_interleave(len(rows))
                positions = torch.arange(len(shared), len(shared) + width, device=device).unsqueeze(0).expand(len(rows), -1)
                hidden = self.model.model(input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=positions,
                                          use_cache=past is not None, **{_CACHE_ARG: past}).last_hidden_state
                for r, row in enumerate(rows):
                    ex = chunk[r // 2]
                    tail = hidden[r, : len(row)].to(keep)
                    self.states[(ex.case.transcript.id, r % 2)] = torch.cat([head, tail]) if head is not None else tail.clone()
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


def _common_prefix(rows: Sequence[Sequence[int]]) -> list[int]:
    """The token ids every row starts with, leaving each row at least one token of its own."""
    if not rows:
        return []
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for r in rows[1:]:
        k = 0
        while k < n and r[k] == first[k]:
            k += 1
        n = k
    return list(first[: max(n, 0)])
