"""Training only the top layers of a judge, with the frozen lower layers run once per prompt.

With `train_layers: N` the lower layers never change, so their output for a prompt is the same at
every step and epoch. `FrozenPrefix` computes it once (no gradients) and keeps it; a training step then
runs only the top N layers, the final norm and the two letter logits. Measured here on the embedded
model (30 layers): a step of 4 debates in both orders costs ~1.5 s with 6 layers trained (~2.1 s with
8) instead of ~8.3 s for a whole-model float32 step, which buys the few hundred steps the judge needs
(its loss sits at 0.69 for ~150 steps before it falls) within the time budget.
Two savings in the steps, exact up to float rounding (tested against the plain path): the tokens every
prompt shares (system prompt, start of the user turn; about 30% of a templated debate) run through the
top layers once a step, not once a prompt, and the batch continues from their cache; and the last layer
runs its MLP only at the last position, the one the answer letters are read from. Together, on a 2-core
AMD EPYC with AVX2 and no native bfloat16, `debate bench judge-train --train-layers 6` went from 2.15 s a
step (8 prompts, 1752 tokens) to 1.51 s.
The lower layers may run under bfloat16 autocast (`lower_dtype`; ~2.5x faster on a CPU with native
bfloat16, several times slower on one without, so `auto` picks it only where the hardware has it); only
their output is rounded: states are stored in the dtype the trained top layers run in, and training
validates the whole model at the end in the dtype the judge will be served in.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from debate.backends.prefix_cache import CACHE_ARG as _CACHE_ARG
from debate.backends.prefix_cache import cache_of, common_prefix
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
        # the states of the tokens every stored prompt starts with, and each prompt's states after them (views)
        self.head: Optional[torch.Tensor] = None
        self.head_ids: Optional[list[int]] = None
        self.tails: dict[tuple[str, int], torch.Tensor] = {}

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
        """The model cut to its trained top layers (for steps on stored states); restored after.

        The top layers' attention modules are renumbered from 0 while cut, so that a cache made for the cut
        model fills its first layers (transformers sizes masks from the cache's first layer); the last layer
        is wrapped to run its MLP at the last position only, where the architecture is the plain pre-norm one."""
        inner = self.model.model
        top = list(self.layers[self.split :])
        numbers = [getattr(layer.self_attn, "layer_idx", None) for layer in top]
        if type(top[-1]).__name__ in _PRE_NORM_LAYERS:
            top[-1] = _LastPositionOnly(top[-1])
        inner.layers = torch.nn.ModuleList(top)
        try:
            for k, layer in enumerate(self.layers[self.split :]):
                if numbers[k] is not None:
                    layer.self_attn.layer_idx = k
            yield
        finally:
            inner.layers = self.layers
            for k, layer in enumerate(self.layers[self.split :]):
                if numbers[k] is not None:
                    layer.self_attn.layer_idx = numbers[k]

    @torch.no_grad()
    def add(self, examples: Sequence[Example], batch: int = 8, desc: str = "", progress: bool = False) -> None:
        """Run the lower layers once over every example in both orders and keep the states.

        Every judge prompt starts with the same tokens (system prompt, the start of the user turn); causal
        attention makes their states the same in every prompt, so they run once and each batch continues
        from their cache (about a quarter of the tokens of a templated debate)."""
        todo = [ex for ex in examples if (ex.case.transcript.id, 0) not in self.states]
        if not todo:
            return
        bar = tqdm(total=len(todo), desc=desc or "lower layers", unit="debate", disable=not progress, dynamic_ncols=True)
        autocast = torch.autocast(self.model.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)
        keep = self.model.dtype  # states are stored in the dtype the top layers run in
        tok = self.scorer.backend.tokenizer
        rows_of = tok(self.scorer.texts(todo)[0], add_special_tokens=False)["input_ids"]  # both orders of each, in turn
        # batches of debates of similar length pad less; each state is stored by key, so the order is free
        by_length = sorted(range(len(todo)), key=lambda i: len(rows_of[2 * i]) + len(rows_of[2 * i + 1]))
        todo = [todo[i] for i in by_length]
        ids = [[row for i in by_length[k : k + batch] for row in (rows_of[2 * i], rows_of[2 * i + 1])]
               for k in range(0, len(todo), batch)]
        shared = common_prefix([row for chunk in ids for row in chunk])
        if self.head_ids is not None and shared[: len(self.head_ids)] == self.head_ids:
            shared = self.head_ids  # rows added later continue the same stored head
        device = self.model.device
        with self._lower(), autocast:
            cache, head = None, None
            if shared:
                out = self.model.model(input_ids=torch.tensor([shared], device=device), use_cache=True)
                cache, head = cache_of(out), out.last_hidden_state[0].to(keep)
                if self.head_ids is None:
                    self.head, self.head_ids = head, list(shared)
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
                    key = (ex.case.transcript.id, r % 2)
                    self.states[key] = torch.cat([head, tail]) if head is not None else tail.clone()
                    if head is not None and shared == self.head_ids:
                        self.tails[key] = self.states[key][len(shared) :]
                bar.update(len(chunk))
        bar.close()

    def rows(self, examples: Sequence[Example], orders: Optional[Sequence[int]] = None) -> tuple[list[tuple[str, int]], torch.Tensor]:
        """Keys of the stored states in the order `LetterScorer.texts` would give the prompts, and the correct letters."""
        shown = presentations(examples, orders)
        return [(ex.case.transcript.id, order) for ex, order, _ in shown], torch.tensor([target for _, _, target in shown])

    def logits(self, keys: list[tuple[str, int]], autocast: Optional[torch.dtype] = None) -> torch.Tensor:
        """Letter log-probabilities (as `LetterScorer.logits`) from stored states through the top layers (call inside
        `upper`): the shared head once and the rows continuing from its cache when every row has it, else each row whole."""
        with torch.autocast(self.model.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            if self.head is not None and all(k in self.tails for k in keys):
                out = self._from_head([self.tails[k] for k in keys])
            else:
                out = self._whole([self.states[k] for k in keys])
        return letter_logprobs(out, self.scorer.letter_ids)

    def _whole(self, states: list[torch.Tensor]) -> torch.Tensor:
        x, mask, _ = _left_padded(states, 0)
        return self.model(inputs_embeds=x, attention_mask=mask, logits_to_keep=1, use_cache=False).logits[:, -1, :]

    def _from_head(self, tails: list[torch.Tensor]) -> torch.Tensor:
        inner, n = self.model.model, self.head.shape[0]
        out = inner(inputs_embeds=self.head[None], use_cache=True)
        cache = cache_of(out)
        cache.batch_repeat_interleave(len(tails))
        x, mask, positions = _left_padded(tails, n)
        mask = torch.cat([mask.new_ones(len(tails), n), mask], dim=1)
        hidden = inner(inputs_embeds=x, attention_mask=mask, position_ids=positions, use_cache=True, **{_CACHE_ARG: cache}).last_hidden_state
        return self.model.lm_head(hidden[:, -1, :])


def letter_logprobs(out: torch.Tensor, letter_ids: Sequence[int]) -> torch.Tensor:
    """Rows of next-token logits -> the log-probabilities of the answer letters over the whole vocabulary, in float32."""
    return torch.log_softmax(out.float(), dim=-1)[:, letter_ids]


# decoder layers whose forward is exactly: x + attn(norm1(x)), then h + mlp(norm2(h)) (the wrapper below relies on it)
_PRE_NORM_LAYERS = {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer"}


class _LastPositionOnly(torch.nn.Module):
    """A pre-norm decoder layer, last of the model, whose MLP runs at the last position only: the letters are read
    there, and the MLP is most of a layer's cost. Attention still runs (and caches) at every position."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        layer = self.layer
        attn, _ = layer.self_attn(hidden_states=layer.input_layernorm(hidden_states), **kwargs)
        h = (hidden_states + attn)[:, -1:]
        return h + layer.mlp(layer.post_attention_layernorm(h))


def _left_padded(states: Sequence[torch.Tensor], start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows left-padded into one batch (so every row ends at the last position), their mask, and positions that
    count on from `start` (the length of a cached head) for the real tokens."""
    width = max(h.shape[0] for h in states)
    x = states[0].new_zeros(len(states), width, states[0].shape[1])
    mask = torch.zeros(len(states), width, dtype=torch.long, device=x.device)
    positions = torch.full((len(states), width), start, dtype=torch.long, device=x.device)
    for r, h in enumerate(states):
        n = h.shape[0]
        x[r, width - n :] = h
        mask[r, width - n :] = 1
        positions[r, width - n :] = torch.arange(start, start + n, device=x.device)
    return x, mask, positions
