"""Per-row sampling for batched `generate`: each row's temperature, top-p and seed, so a row's text
does not depend on which other requests share its batch.

`model.generate` runs greedy (argmax); this logits processor turns each sampled row's argmax into a
draw from its softmax: argmax(logits / T + Gumbel noise) is a sample of softmax(logits / T) (the
Gumbel-max trick). The noise comes from a generator seeded by that row's request seed and advanced
once per step, so token k of a row always uses the row's k-th draw whatever the batch holds.
"""

from __future__ import annotations

from typing import Sequence

import torch


class RowSampler:
    """Logits processor: per-row temperature and top-p, then per-row seeded Gumbel noise.

    Rows with temperature 0 are left untouched, so greedy rows stay greedy in the same batch.
    """

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int]) -> None:
        if not len(temperatures) == len(top_ps) == len(seeds):
            raise ValueError(f"one temperature, top_p and seed per row, got {len(temperatures)}, {len(top_ps)}, {len(seeds)}")
        self.temperatures = [float(t) for t in temperatures]
        self.top_ps = [float(p) for p in top_ps]
        self.sampled = [i for i, t in enumerate(self.temperatures) if t > 0]
        # CPU generators: the same draws on every device, independent of CUDA kernels
        self.generators = {i: torch.Generator().manual_seed(int(seeds[i])) for i in self.sampled}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.sampled:
            return scores
        rows = torch.tensor(self.sampled, device=scores.device)
        temps = torch.tensor([self.temperatures[i] for i in self.sampled], device=scores.device).unsqueeze(1)
        logits = scores[rows].float() / temps
        # the nucleus only where top_p < 1 (sorting the vocabulary every step is much of the sampler's cost)
        nucleus = [j for j, i in enumerate(self.sampled) if self.top_ps[i] < 1.0]
        if nucleus:
            top_ps = torch.tensor([self.top_ps[self.sampled[j]] for j in nucleus], device=scores.device).unsqueeze(1)
            logits[nucleus] = top_p_mask(logits[nucleus], top_ps)
        noise = torch.stack([gumbel(self.generators[i], scores.shape[-1]) for i in self.sampled]).to(scores.device)
        out = scores.float().clone()
        out[rows] = logits + noise
        return out


def top_p_mask(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Set to -inf every token outside each row's nucleus (the fewest tokens whose mass reaches top_p).

    The most likely token is always kept.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # mass of the strictly more likely tokens
    drop_sorted = mass_before >= top_p
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def gumbel(generator: torch.Generator, size: int) -> torch.Tensor:
    """Standard Gumbel noise, drawn from `generator` (one draw of `size` values per call)."""
    u = torch.rand(size, generator=generator, dtype=torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    return -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-7)))
