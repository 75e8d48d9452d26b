"""The tokens every prompt of a batch starts with, run once: their cache is repeated for the batch and each
row continues from it. Judge prompts share their system prompt and the start of the user turn (about a
quarter of a tournament judge prompt), so scoring a batch this way skips that share of the work, with
the same logits up to float rounding (RoPE attention depends on relative positions only)."""

from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence

import torch


# transformers renamed the cache argument of a model's forward (`past_key_values` -> `cache`); use what it takes
def _cache_arg() -> str:
    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


CACHE_ARG = _cache_arg()


def common_prefix(rows: Sequence[Sequence[int]]) -> list[int]:
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


def cache_of(out: Any) -> Any:
    """The key/value cache a forward returned (its attribute's name differs across transformers versions)."""
    cache = getattr(out, "cache", None)  # first: newer versions warn on every read of `past_key_values`
    return cache if cache is not None else out.past_key_values


def last_logits_shared_head(model: Any, rows: Sequence[Sequence[int]], pad_id: int, min_shared: int = 16) -> Optional[torch.Tensor]:
    """Next-token logits after each row of token ids, with the rows' common head run once; None when the
    batch has one row or shares fewer than `min_shared` tokens (the caller then runs the plain batch)."""
    shared = common_prefix(rows)
    if len(rows) < 2 or len(shared) < min_shared or not hasattr(model, "model"):  # `model.model`: the decoder stack
        return None
    device, n = model.device, len(shared)
    cache = cache_of(model.model(input_ids=torch.tensor([shared], device=device), use_cache=True))
    if not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(len(rows))
    tails = [r[n:] for r in rows]
    width = max(len(t) for t in tails)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n + width), dtype=torch.long)
    mask[:, :n] = 1
    positions = torch.full((len(rows), width), n, dtype=torch.long)
    for r, tail in enumerate(tails):  # left-padded: every row ends at the last position
        k = len(tail)
        ids[r, width - k :] = torch.tensor(tail)
        mask[r, n + width - k :] = 1
        positions[r, width - k :] = torch.arange(n, n + k)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                use_cache=True, logits_to_keep=1, **{CACHE_ARG: cache})
    return out.logits[:, -1, :]


def prompt_cache(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: Sequence[int]) -> Optional[Any]:
    """The key/value cache of every token but the last of each distinct prompt (the left-padded `input_ids`,
    one row a prompt), run once a prompt and then laid out one row per generated row (`rows[i]`: the prompt of
    row i), so samples of one prompt share their prefill; `generate` given it runs each row's last prompt token
    and continues. None when a prompt has a single token or the cache cannot be laid out (the caller then runs the
    plain batch). Positions follow the padding as `generate` counts them, so the cache is the one generate would
    have built, up to float rounding."""
    real = attention_mask.sum(-1)
    if input_ids.shape[1] < 2 or bool((real < 2).any()):
        return None
    mask = attention_mask[:, :-1]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids[:, :-1], attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = cache_of(out)
    if not hasattr(cache, "batch_select_indices"):
        return None
    cache.batch_select_indices(torch.tensor(list(rows), device=input_ids.device))
    return cache
