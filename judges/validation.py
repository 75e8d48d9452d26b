"""Validating a judge while and after it trains: accuracy, and the check in the dtype it will be served in.

A judge trained in float32 and served in bfloat16 can put almost no probability on the answer letters,
and every such verdict is a recorded failure in a tournament. So after training, the whole model is
scored on the validation debates in each dtype it could be served in, with the same letter-mass floor
the model judge applies; the first dtype that fails no verdict and keeps the float32 accuracy is the
judge's serving dtype (recorded in judge.json), and a judge that fails in every dtype is a failed run.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Optional, Sequence

import torch

from judges.judge_data import Example


class JudgeTrainingFailed(RuntimeError):
    """A trained judge that would fail verdicts where it is served: not stored as a judge."""


@torch.no_grad()
def accuracy_on(scorer: Any, examples: Sequence[Example], autocast: Optional[torch.dtype] = None, batch: int = 8, prefix: Any = None) -> float:
    """Fraction of debates whose order-averaged probability of the correct answer exceeds 0.5."""
    from judges.train import batch_logits

    correct = 0
    for k in range(0, len(examples), batch):
        logits, targets = batch_logits(scorer, examples[k : k + batch], autocast=autocast, prefix=prefix)
        p = torch.softmax(logits, dim=-1)
        p_right = p[torch.arange(len(targets)), targets.to(p.device)]
        correct += int(((p_right[0::2] + p_right[1::2]) / 2 > 0.5).sum())
    return correct / max(1, len(examples))


@torch.no_grad()
def letter_check(scorer: Any, examples: Sequence[Example], min_letter_mass: float, batch: int = 8) -> dict:
    """The whole model as it stands (its dtype, no autocast), scored the way the model judge scores:
    accuracy over the debates whose both orders put at least `min_letter_mass` on the two letters, the
    number that do not (they would be failed verdicts), and the letter mass's quantiles."""
    model = scorer.backend.model
    masses: list[float] = []
    correct = failed = 0
    for k in range(0, len(examples), batch):
        chunk = examples[k : k + batch]
        texts, targets = scorer.texts(chunk)
        enc = scorer.backend.encode(texts)
        logp = torch.log_softmax(model(**enc, logits_to_keep=1).logits[:, -1, :].float(), dim=-1)
        letters = logp[:, scorer.letter_ids].exp()
        mass = letters.sum(dim=1)
        p_right = (letters[torch.arange(len(targets)), targets.to(letters.device)] / mass.clamp_min(1e-30)).tolist()
        masses.extend(mass.tolist())
        for d in range(len(chunk)):
            if min(mass[2 * d], mass[2 * d + 1]) < min_letter_mass or not all(map(math.isfinite, p_right[2 * d : 2 * d + 2])):
                failed += 1
            elif (p_right[2 * d] + p_right[2 * d + 1]) / 2 > 0.5:
                correct += 1
    ordered = sorted(masses)
    q = lambda f: ordered[min(len(ordered) - 1, int(f * len(ordered)))] if ordered else math.nan  # noqa: E731
    n = len(examples)
    return {
        "accuracy": correct / max(1, n), "failed": failed, "debates": n,
        "letter_mass": {"min": q(0.0), "p05": q(0.05), "median": q(0.5)},
    }


def serving_check(scorer: Any, examples: Sequence[Example], candidates: Sequence[str], min_letter_mass: float,
                  max_accuracy_drop: float = 0.05) -> tuple[str, list[dict]]:
    """Score the trained (float32) model in each candidate serving dtype, in order; the first that fails no
    verdict and loses at most `max_accuracy_drop` against float32 is chosen. Raises JudgeTrainingFailed
    when none qualifies. The model is left as it was (checks in another dtype run on a copy)."""
    backend = scorer.backend
    trained = backend.model
    results: list[dict] = []
    reference = None
    for dtype in dict.fromkeys(["float32", *candidates]):  # float32 first: the reference accuracy
        backend.model = trained if dtype == "float32" else copy.deepcopy(trained).to(getattr(torch, dtype))
        try:
            res = {"dtype": dtype, **letter_check(scorer, examples, min_letter_mass)}
        finally:
            backend.model = trained
        results.append(res)
        if reference is None:
            reference = res["accuracy"]
    for dtype in candidates:
        res = next(r for r in results if r["dtype"] == dtype)
        if res["failed"] == 0 and res["accuracy"] >= reference - max_accuracy_drop:
            return dtype, results
    summary = "; ".join(f"{r['dtype']}: {r['failed']} of {r['debates']} failed, accuracy {r['accuracy']:.3f}, "
                        f"letter mass min {r['letter_mass']['min']:.2e}" for r in results)
    raise JudgeTrainingFailed(
        f"the trained judge would fail verdicts where it is served ({summary}; floor {min_letter_mass:g}); "
        f"train longer, lower lr, or serve it with an explicit dtype")
