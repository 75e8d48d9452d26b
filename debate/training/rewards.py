"""From verdicts to training signal: zero-sum rewards, per-role baselines, pairs and labels.

See DESIGN.md, Training. Every function here is pure: it takes samples and returns new ones
(`Sample` is frozen), so the loop can log what it dropped and why.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from debate.training.samples import Sample

PAIR_MARGIN = 1e-6  # rewards closer than this are a tie: no preference to learn from
PROB_SLACK = 1e-6  # rounding error tolerated on a judge's probability


def side_rewards(p_side0: float) -> tuple[float, float]:
    """Zero-sum rewards (R0, R1) with R0 = 2p - 1 and R1 = -R0, p the judge's probability for side 0."""
    # a value well outside [0, 1] is a bug upstream and must be loud; rounding error is only clamped
    if not -PROB_SLACK <= p_side0 <= 1.0 + PROB_SLACK:
        raise ValueError(f"p_side0 must be a probability in [0, 1], got {p_side0}")
    r0 = 2.0 * min(max(p_side0, 0.0), 1.0) - 1.0
    return r0, -r0


def assign_rewards(samples: Sequence[Sample], p_side0: Mapping[str, float | None]) -> list[Sample]:
    """Each sample with the reward of its side under its transcript's verdict (keyed by transcript_id).

    Samples whose transcript has no usable verdict (missing, None or NaN) are dropped rather than
    given reward 0, which would read as a draw; the caller counts len(samples) - len(result)."""
    out = []
    for s in samples:
        p = p_side0.get(s.transcript_id)
        if p is None or math.isnan(p):
            continue
        out.append(dataclasses.replace(s, reward=side_rewards(p)[s.side]))
    return out


def mean_rewards(samples: Sequence[Sample], games_of: Mapping[str, Sequence[str]],
                 p_side0: Mapping[str, float | None]) -> list[Sample]:
    """Each sample with the mean of its side's reward over every game it was judged in (`games_of`, keyed by
    sample key: its own game and, with `opponents: all`, its pairings with every other opponent).

    Games without a usable verdict are left out of the mean; a sample with none is dropped (not given 0, a
    draw), and so is a sample `games_of` does not know."""
    out = []
    for s in samples:
        ps = [p for p in (p_side0.get(t) for t in games_of.get(s.key, ())) if p is not None and not math.isnan(p)]
        if ps:
            out.append(dataclasses.replace(s, reward=sum(side_rewards(p)[s.side] for p in ps) / len(ps)))
    return out


def verifiable_rewards(samples: Sequence[Sample], honest_supported: Mapping[str, bool],
                       correct_side: Mapping[str, int]) -> list[Sample]:
    """The RLVR baseline: a reward from ground truth instead of a judge.

    Per transcript, when the honest side's quote holds the deciding fact (`honest_supported` True)
    the honest side (`correct_side`) gets +1 and the dishonest side -1; otherwise the honest side
    failed to make its case and the signs flip. Transcripts missing from either map are dropped."""
    out = []
    for s in samples:
        tid = s.transcript_id
        if tid not in honest_supported or tid not in correct_side:
            continue
        honest = s.side == correct_side[tid]
        won = honest if honest_supported[tid] else not honest
        out.append(dataclasses.replace(s, reward=1.0 if won else -1.0))
    return out


def branch_rewards(samples: Sequence[Sample], p_side0: Mapping[str, float | None], branches: int) -> list[Sample]:
    """The process reward (`reward: turn`): each branched speech gets its side's reward under its branch's final
    verdict (keyed by the branch's transcript_id), grouped by branch point (`Sample.branch`).

    A point is kept only whole: `branches` samples, each with a usable verdict. A branch whose game or verdict
    failed drops its whole point, since comparing the branches left would silently leave out the one speech the
    judge (or the engine) could not handle; the caller counts the points left out. Order is preserved."""
    by_point: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if not s.branch:
            raise ValueError(f"sample {s.key} has no branch point; branch_rewards scores branched speeches only")
        by_point[s.branch].append(s)

    def usable(p: float | None) -> bool:
        return p is not None and not math.isnan(p)

    whole = {b for b, members in by_point.items()
             if len(members) == branches and all(usable(p_side0.get(s.transcript_id)) for s in members)}
    return assign_rewards([s for s in samples if s.branch in whole], p_side0)


def penalize_missing_eos(samples: Sequence[Sample], penalty: float) -> list[Sample]:
    """Each speech the token or word limit cut off (`ended` False: the policy never sampled its end) with `penalty`
    subtracted from its reward, as TRL's `missing_eos_penalty`; the others unchanged. Without it nothing in the
    reward says where a speech should stop, and pairs whose better speech was cut off (its end not scored) while
    the worse one ended (its end scored, and pushed down) can teach the policy to run on. Baselines are computed
    after it (`with_baselines`), so they see the penalized rewards. Order is preserved."""
    if not penalty >= 0:
        raise ValueError(f"missing_eos_penalty must be >= 0, got {penalty}")
    return [s if s.ended or penalty == 0 else dataclasses.replace(s, reward=s.reward - penalty) for s in samples]


def reward_summary(scored: Sequence[Sample], correct: Mapping[str, int]) -> dict:
    """An iteration's rewards in two numbers: the honest side's mean reward (`correct`: question id -> the
    correct answer's index) and the mean absolute advantage (how much signal the baselines leave)."""
    honest = [x.reward for x in scored if x.side == correct[x.question_id]]
    return {"reward_honest": sum(honest) / len(honest) if honest else math.nan,
            "abs_advantage": sum(abs(x.advantage) for x in scored) / len(scored) if scored else math.nan}


def _groups(samples: Sequence[Sample]) -> dict[tuple[str, int, int, str], list[Sample]]:
    groups: dict[tuple[str, int, int, str], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.group].append(s)
    return groups


def with_baselines(samples: Sequence[Sample]) -> list[Sample]:
    """Per-role leave-one-out baselines: the mean reward of the other samples of the same group.

    The baseline is per group (question, side, turn; and branch point for `reward: turn`) because rewards
    are zero-sum: a baseline pooled over both sides is identically zero and removes no variance. Leaving
    the sample out keeps the baseline independent of the sample's own reward, so the gradient estimate
    stays unbiased. A group of one has nothing to compare with: its baseline is its own reward (advantage
    0, no signal) rather than 0, which would train on the raw, judge-noise-dominated reward. Order is
    preserved."""
    groups = _groups(samples)
    totals = {g: sum(s.reward for s in members) for g, members in groups.items()}
    out = []
    for s in samples:
        n = len(groups[s.group])
        baseline = s.reward if n == 1 else (totals[s.group] - s.reward) / (n - 1)
        out.append(dataclasses.replace(s, baseline=baseline))
    return out


def of_sides(samples: Sequence[Sample], correct: Mapping[str, int], sides: str = "both") -> list[Sample]:
    """The samples an update trains on (`train_sides`): both sides, or only the honest (`correct`: question id ->
    the correct answer's index) or the dishonest one; their rewards and baselines stay those of the whole game."""
    if sides == "both":
        return list(samples)
    if sides not in ("honest", "dishonest"):
        raise ValueError(f"unknown train_sides {sides!r}; known: both, honest, dishonest")
    return [s for s in samples if (s.side == correct[s.question_id]) == (sides == "honest")]


def best_worst_pairs(samples: Sequence[Sample]) -> list[tuple[Sample, Sample]]:
    """Per group, (highest reward, lowest reward) when they differ by more than PAIR_MARGIN.

    Ties and groups of one give no pair. Deterministic: groups in sorted order, and among equal
    rewards the smallest key wins both the best and the worst slot."""
    pairs = []
    for g, members in sorted(_groups(samples).items()):
        members = sorted(members, key=lambda s: s.key)
        best = max(members, key=lambda s: s.reward)  # max/min return the first of equals: smallest key
        worst = min(members, key=lambda s: s.reward)
        if best.reward - worst.reward > PAIR_MARGIN:
            pairs.append((best, worst))
    return pairs


def kto_examples(samples: Sequence[Sample]) -> list[tuple[Sample, bool]]:
    """KTO labels: desirable when the advantage is > 0, undesirable when < 0, skipped at exactly 0
    (a group of one, or a sample no better than its peers, says nothing either way)."""
    return [(s, s.advantage > 0) for s in samples if s.advantage != 0]


def usable(objective_kind: str, samples: Sequence[Sample]) -> int:
    """How many units an objective of this kind would train on: pairs, labelled examples, or samples
    with a nonzero advantage (token objectives). Zero means the loop should skip and record it."""
    if objective_kind == "pairs":
        return len(best_worst_pairs(samples))
    if objective_kind == "labelled":
        return len(kto_examples(samples))
    if objective_kind == "tokens":
        return sum(1 for s in samples if s.advantage != 0)
    raise ValueError(f"unknown objective kind {objective_kind!r}; known: pairs, labelled, tokens")
