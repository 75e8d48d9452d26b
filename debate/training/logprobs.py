"""Per-token log-probabilities of speeches given their prompts, batched, for the learner's objectives."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from debate.training.samples import Sample

Tensor = torch.Tensor


def encode_pairs(tokenizer: Any, prompts: Sequence[str], completions: Sequence[str],
                 ended: Optional[Sequence[bool]] = None) -> tuple[list[list[int]], list[int]]:
    """Token ids of prompt + completion (+ eos) per row, and each row's prompt length.

    Prompt and completion are tokenized separately (no special tokens added) so the boundary is exact:
    a joint tokenization could merge the prompt's last characters with the speech's first ones. The eos
    is scored where the speech ended there (`ended`, default every row), so the policy learns when to stop;
    a speech the token or word limit cut off never sampled it, and scoring it would add a token the policy
    never chose (one such eos, at log-prob -40, made a whole iteration's mean KL 3.4 instead of 0.2)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token; the learner scores the end of each speech with it")
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    ended = [True] * len(p_ids) if ended is None else list(ended)
    rows, starts = [], []
    for i, (p, c, end) in enumerate(zip(p_ids, c_ids, ended)):
        if not p:
            raise ValueError(f"sample {i}: the prompt is empty; a completion is scored given its prompt")
        rows.append(list(p) + list(c) + ([eos] if end else []))
        starts.append(len(p))
    return rows, starts


def completion_logps(model: Any, tokenizer: Any, samples: Sequence[Sample], device: str | torch.device,
                     grad: bool, share_prompts: bool = True) -> tuple[Tensor, Tensor]:
    """log pi(token) of each sample's completion tokens (+ eos where it `ended`) given its prompt:
    ([B, T], mask [B, T]).

    Where samples share a prompt (a DPO pair's two speeches, a group's samples), the prompt runs once and its
    key/value cache is handed to each of its completions (`share_prompts`; `_shared_prompt_logits`): the
    prompt is most of each sequence, so a pair costs about one row instead of two, with the same log-probs
    and gradients up to float rounding (tests/test_shared_prompts.py). Otherwise rows are RIGHT padded so
    every token keeps the position ids it had unpadded (left padding shifts them in models that number
    positions from the start of the tensor), and logits are computed only at the positions that predict
    completion tokens (`logits_to_keep` as per-row positions), never over the prompt: the vocabulary is wide."""
    rows, starts = encode_pairs(tokenizer, [s.prompt for s in samples], [s.completion for s in samples],
                                [s.ended for s in samples])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = [tuple(r[:p]) for r, p in zip(rows, starts)]
    with torch.set_grad_enabled(grad):
        if share_prompts and len(set(prompts)) < len(prompts):
            logits, targets, mask = _shared_prompt_logits(model, prompts, [r[p:] for r, p in zip(rows, starts)],
                                                          pad, device)
        else:
            logits, targets, mask = _row_logits(model, rows, starts, pad, device)
        # log-softmax at the target only: the gathered logit minus the logsumexp, no [B, T, V] log-probs kept
        picked = torch.gather(logits, 2, targets[..., None]).squeeze(-1)
        logp = (picked - torch.logsumexp(logits, dim=-1)) * mask
    return logp, mask


def _row_logits(model: Any, rows: Sequence[list[int]], starts: Sequence[int], pad: int,
                device: str | torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Logits [B, T, V] at the positions that predict each row's completion tokens, the targets [B, T] and
    their mask, each row (prompt + completion) run whole."""
    B, L = len(rows), max(len(r) for r in rows)
    T = max(len(r) - p for r, p in zip(rows, starts))
    ids = torch.full((B, L), pad, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        attn[i, : len(r)] = 1
        mask[i, : len(r) - starts[i]] = True
    start = torch.tensor(starts)[:, None]
    steps = torch.arange(T)[None, :]
    # position p - 1 predicts token p; padding positions are clamped in range and masked out
    keep = (start - 1 + steps).clamp(max=L - 1)
    targets = torch.gather(ids, 1, (start + steps).clamp(max=L - 1))
    ids, attn, keep, targets, mask = (t.to(device) for t in (ids, attn, keep, targets, mask))
    logits, _ = _logits_at(model, keep, input_ids=ids, attention_mask=attn, use_cache=False)
    return logits, targets, mask


def _per_row_keep() -> bool:
    """Whether this transformers takes `logits_to_keep` as per-row positions (a 2-D integer tensor; 5.2x on).
    Older versions index the sequence with it as a whole, which a 2-D tensor turns into a wrong shape."""
    from transformers import modeling_utils

    return hasattr(modeling_utils, "slice_logits_to_keep")


PER_ROW_KEEP = _per_row_keep()


def _logits_at(model: Any, positions: Tensor, **inputs: Any) -> tuple[Tensor, Any]:
    """The float logits [B, K, V] at each row's `positions` [B, K] and the model's output: computed at those
    positions only where transformers takes per-row positions, else over the span from the smallest to the
    largest of them and then picked per row."""
    if PER_ROW_KEEP:
        out = model(**inputs, logits_to_keep=positions)
        return out.logits.float(), out
    lo, hi = int(positions.min()), int(positions.max()) + 1
    out = model(**inputs, logits_to_keep=torch.arange(lo, hi, device=positions.device))
    return torch.take_along_dim(out.logits, (positions - lo)[..., None], dim=1).float(), out


def _padded(seqs: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Right padded ids [N, max len] and their attention mask."""
    ids = torch.full((len(seqs), max(len(x) for x in seqs)), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, x in enumerate(seqs):
        ids[i, : len(x)], attn[i, : len(x)] = torch.tensor(list(x), dtype=torch.long), 1
    return ids, attn


def _shared_prompt_logits(model: Any, prompts: Sequence[tuple[int, ...]], completions: Sequence[list[int]], pad: int,
                          device: str | torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """`_row_logits` with each distinct prompt run once: the prompts (right padded) in one forward that keeps
    their key/value cache and the logits of each prompt's last token (which predict the completion's first);
    the cache's rows are then picked per completion (an index, so gradients flow back into the prompt's
    forward) and the completions run after it, at the positions they hold in the whole row, with the
    prompts' padding masked out."""
    from debate.backends.prefix_cache import CACHE_ARG, cache_of

    index = {p: i for i, p in enumerate(dict.fromkeys(prompts))}  # distinct prompts, in order of first use
    distinct = list(index)
    group = torch.tensor([index[p] for p in prompts])
    p_ids, p_attn = _padded(distinct, pad)
    p_len = p_attn.sum(dim=1)
    c_ids, c_mask = _padded(completions, pad)
    T = c_ids.shape[1]
    p_ids, p_attn, p_len, c_ids, c_mask, group = (t.to(device) for t in (p_ids, p_attn, p_len, c_ids, c_mask, group))
    logits, out = _logits_at(model, (p_len - 1)[:, None], input_ids=p_ids, attention_mask=p_attn, use_cache=True)
    logits = logits[group]  # [B, 1, V]: each prompt's last token predicts the completion's first
    if T > 1:
        cache = cache_of(out)
        cache.batch_select_indices(group)
        positions = p_len[group][:, None] + torch.arange(T, device=device)[None, :]
        rest = model(input_ids=c_ids, attention_mask=torch.cat([p_attn[group], c_mask], dim=1), position_ids=positions,
                     use_cache=True, logits_to_keep=torch.arange(T - 1, device=device), **{CACHE_ARG: cache})
        logits = torch.cat([logits, rest.logits.float()], dim=1)
    return logits, c_ids, c_mask.bool()


def sequence_logratio(logp: Tensor, ref_logp: Tensor, mask: Tensor, average: bool) -> Tensor:
    """Per-sequence log pi(y) - log ref(y): summed over completion tokens, or averaged per token."""
    m = mask.to(logp.dtype)
    total = ((logp - ref_logp) * m).sum(dim=1)
    return total / m.sum(dim=1).clamp(min=1.0) if average else total


def sequence_kl(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence KL(pi || ref) estimate from the completion tokens: the sum over tokens of
    exp(d) - 1 - d, d = log ref - log pi (Schulman's k3, the estimator of TRL's GRPO KL term).

    Its expectation over tokens sampled from pi is the per-token KL, like the plain sum of log pi - log ref
    (k1), but every term is >= 0, so a reported KL is never negative, and its variance is usually lower: k1
    over a few dozen speeches can come out below zero (run verif1 printed -0.078)."""
    d = (ref_logp - logp) * mask.to(logp.dtype)  # 0 off the mask, where exp(0) - 1 - 0 = 0
    return (torch.exp(d) - 1.0 - d).sum(dim=1)


def pad_rows(rows: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """1-D per-sample tensors right padded into [B, T] with their mask (cached log-probs re-batched)."""
    T = max(len(r) for r in rows)
    out = rows[0].new_zeros((len(rows), T))
    mask = torch.zeros((len(rows), T), dtype=torch.bool, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        mask[i, : len(r)] = True
    return out, mask


def unpad_rows(values: Tensor, mask: Tensor) -> list[Tensor]:
    """The inverse of `pad_rows`: each row's masked values (detached)."""
    return [values[i, : int(mask[i].sum())].detach() for i in range(len(values))]
