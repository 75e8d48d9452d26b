"""The update objectives, as plain functions over log-probabilities (see DESIGN.md, Training).

Sequence objectives take per-sequence log-ratios r = log pi(y) - log ref(y); token objectives take
per-token log-probabilities with a mask of the completion's tokens. Every function returns a loss to
minimise; none of them reads a model, so tests check them on hand-made tensors and against TRL's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _token_mean(x: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def dpo(chosen: Tensor, rejected: Tensor, beta: float) -> Tensor:
    """Per-pair DPO loss -log sigmoid(beta * h), h = r(chosen) - r(rejected)."""
    return -F.logsigmoid(beta * (chosen - rejected))


def ipo(chosen: Tensor, rejected: Tensor, beta: float) -> Tensor:
    """Per-pair IPO loss (h - 1 / (2 beta))^2. The learner passes log-ratios averaged over each
    completion's tokens, as TRL does (a summed h makes the target scale with speech length)."""
    return (chosen - rejected - 1.0 / (2.0 * beta)) ** 2


def sft(logp: Tensor, mask: Tensor) -> Tensor:
    """The negative log-likelihood of the chosen completions: -log pi averaged over every completion token of the
    batch (TRL's DPO `sft` loss term, added to DPO or IPO with the weight `sft_weight`)."""
    return _token_mean(-logp, mask)


def kto(logratio: Tensor, desirable: Tensor, kl: Tensor, beta: float,
        desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> Tensor:
    """Per-example KTO loss: 1 - sigmoid(beta (r - z)) for desirable speeches, 1 - sigmoid(beta (z - r))
    for undesirable ones, z a detached batch estimate of the KL to the reference (clamped at 0)."""
    z = kl.detach().clamp(min=0)
    good = desirable_weight * (1 - torch.sigmoid(beta * (logratio - z)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - logratio)))
    return torch.where(desirable.bool(), good, bad)


def kto_kl(logratio_mismatched: Tensor) -> Tensor:
    """KTO's reference point z: the mean log-ratio of completions paired with prompts they were not
    written for (detached), never below zero."""
    return logratio_mismatched.detach().mean().clamp(min=0)


def returns(logp: Tensor, ref_logp: Tensor, mask: Tensor, outcome: Tensor, beta: float) -> Tensor:
    """Per-token returns-to-go (detached): a reward of -beta (log pi - log ref) at every token of the
    completion, plus the outcome reward at its last token; zero outside the mask."""
    mask = mask.to(logp.dtype)
    rewards = -beta * (logp - ref_logp).detach() * mask
    last = mask.cumsum(dim=1).argmax(dim=1)  # index of the last completion token of each row
    rewards = rewards.clone()
    rewards[torch.arange(len(last)), last] += outcome.to(logp.dtype)
    to_go = rewards.flip(1).cumsum(1).flip(1)
    return to_go * mask


def reinforce(logp: Tensor, ref_logp: Tensor, mask: Tensor, outcome: Tensor, baseline: Tensor, beta: float) -> Tensor:
    """REINFORCE with a KL leash: -(G_t - b) log pi_t averaged over completion tokens, G_t the
    return-to-go of `returns` and b the sample's per-role baseline."""
    advantage = returns(logp, ref_logp, mask, outcome, beta) - baseline.to(logp.dtype)[:, None]
    return _token_mean(-advantage.detach() * logp, mask)


def ppo(logp: Tensor, old_logp: Tensor, ref_logp: Tensor, mask: Tensor, outcome: Tensor, baseline: Tensor,
        beta: float, clip: float = 0.2) -> Tensor:
    """PPO-clip on the same KL-leashed advantages: -min(ratio A, clip(ratio, 1 - eps, 1 + eps) A),
    ratio = exp(log pi - log pi_old), averaged over completion tokens."""
    advantage = (returns(old_logp, ref_logp, mask, outcome, beta) - baseline.to(logp.dtype)[:, None]).detach()
    ratio = torch.exp(logp - old_logp.detach())
    loss = -torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
    return _token_mean(loss, mask)


@dataclass(frozen=True)
class Objective:
    name: str
    kind: str  # pairs (chosen, rejected), labelled (desirable or not), or tokens (per-token advantages)
    loss: Callable[..., Tensor]


OBJECTIVES: dict[str, Objective] = {
    "dpo": Objective("dpo", "pairs", dpo),
    "ipo": Objective("ipo", "pairs", ipo),
    "kto": Objective("kto", "labelled", kto),
    "reinforce": Objective("reinforce", "tokens", reinforce),
    "ppo": Objective("ppo", "tokens", ppo),
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
