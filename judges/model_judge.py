"""A model judge: a probability over the two answers from the answer letters' log-probabilities.

Each transcript is judged in both presentation orders (answer 0 shown as A, then as B) and the two
probabilities of answer 0 averaged; both orders' figures and the top next tokens are kept as raw output.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any, Sequence

from tqdm.auto import tqdm

from debate.backends.base import GenRequest, Sampling, ScoreRequest
from debate.context import expert_passage_budget, speeches_to_drop
from debate.policy import Policy
from debate.prompts import judge_messages
from debate.records import Speech, Verdict, order_average
from judges.base import Case, decided_verdict, failed_verdict
from judges.parsing import parse_verdict

CANDIDATES = (" A", " B")


def speech_pairs(speeches: Sequence[Speech]) -> list[tuple[Speech, str]]:
    """Each speech with the text a judge reads (quotes marked verified or not; the raw text when unmarked)."""
    return [(s, s.judge_text or s.text) for s in speeches]


def answer0_by_order(p_first: Sequence[float]) -> tuple[float, float]:
    """Each order's probability of answer 0 from its probability of the letter shown first (A).

    Order 1 shows answer 0 as B, so its probability of answer 0 is that of the letter B.
    """
    return (p_first[0], 1.0 - p_first[1])


def _said(final: list, key: str) -> tuple[str, ...]:
    """What each presentation order's raw output says under `key` ("error" or "note"), labelled by order."""
    return tuple(f"order {o}: {raw[key]}" for o, raw in enumerate(final[2:]) if isinstance(raw, dict) and raw.get(key))


class ModelJudge:
    """Judges with a policy handle passed in."""

    def __init__(self, name: str, policy: Policy, prompts: dict, mode: str = "logprob", min_letter_mass: float = 1e-4, chunk: int = 64) -> None:
        if mode not in ("logprob", "text"):
            raise ValueError(f"unknown judge mode {mode!r}; known: logprob, text")
        self.name = name
        self.policy = policy
        self.prompts = prompts
        self.mode = mode
        self.min_letter_mass = min_letter_mass
        self.chunk = chunk

    def _prefixes(self, case: Case) -> list[int]:
        """Speech counts to judge at: the whole transcript, plus each turn's end when beliefs are asked."""
        n = len(case.transcript.speeches)
        if not case.protocol.beliefs or n == 0:
            return [n]
        ends = [i + 1 for i, s in enumerate(case.transcript.speeches) if i + 1 == n or case.transcript.speeches[i + 1].turn != s.turn]
        return sorted(set(ends) | {n})

    def judge(self, cases: Sequence[Case], progress: bool = False) -> list[Verdict]:
        out: list[Verdict] = []
        bar = tqdm(total=len(cases), desc=f"judging ({self.name})", unit="debate", disable=not progress, dynamic_ncols=True)
        for k in range(0, len(cases), self.chunk):
            chunk = cases[k : k + self.chunk]
            out.extend(self._judge_chunk(chunk))
            bar.update(len(chunk))
        bar.close()
        return out

    def _fit(self, cases: Sequence[Case]) -> tuple[list[str | None], list[int]]:
        """Each case's passage (expert protocol only, cut to the judge's context) and how many early
        speeches to drop so that the transcript fits; one token-counting call for the whole chunk."""
        passages = [c.question.passage if c.protocol.judge_sees_passage and c.question.passage else None for c in cases]
        texts: list[str] = []
        for case, passage in zip(cases, passages):
            texts.extend([passage or ""] + [s.judge_text or s.text for s in case.transcript.speeches])
        counts = self.policy.count_tokens(texts)
        budget = expert_passage_budget(self.policy.context_length)
        firsts: list[int] = []
        long: list[int] = []
        pos = 0
        for i, case in enumerate(cases):
            n = len(case.transcript.speeches)
            passage_tokens, speech_tokens = counts[pos], counts[pos + 1 : pos + 1 + n]
            pos += 1 + n
            if passages[i] is not None and passage_tokens > budget:
                long.append(i)
                passage_tokens = budget
            firsts.append(speeches_to_drop(self.policy.context_length, speech_tokens, passage_tokens) if n else 0)
        if long:
            cut = self.policy.truncate_tokens([passages[i] or "" for i in long], [budget] * len(long))
            for i, text in zip(long, cut):
                passages[i] = text
        return passages, firsts

    def _judge_chunk(self, cases: Sequence[Case]) -> list[Verdict]:
        jobs: list[tuple[int, int, int]] = []  # (case index, prefix length, order)
        msgs = []
        cut: dict[int, str] = {}
        passages, firsts = self._fit(cases)
        for i, case in enumerate(cases):
            passage, first = passages[i], firsts[i]
            if first:
                cut[i] = f"transcript cut to fit the judge's context: the first {first} of {len(case.transcript.speeches)} speeches dropped"
            for n in self._prefixes(case):
                for order in (0, 1):
                    jobs.append((i, n, order))
                    kept = case.transcript.speeches[min(first, max(n - 1, 0)) : n]
                    msgs.append(judge_messages(self.prompts, case.question, speech_pairs(kept), order, passage))
        # similar lengths in one batch waste less padding
        order = sorted(range(len(msgs)), key=lambda k: sum(len(c) for _, c in msgs[k]))
        try:
            sorted_probs, sorted_raws = self._probabilities([msgs[k] for k in order])
        except Exception as exc:  # the judge's model call failed: every verdict of the chunk records it
            return [failed_verdict(c, self.name, f"judge call failed: {type(exc).__name__}: {exc}") for c in cases]
        probs: list = [None] * len(msgs)
        raws: list = [None] * len(msgs)
        for pos, k in enumerate(order):
            probs[k], raws[k] = sorted_probs[pos], sorted_raws[pos]
        per_case: dict[int, dict[int, list]] = {}
        for (i, n, order), p, raw in zip(jobs, probs, raws):
            per_case.setdefault(i, {}).setdefault(n, [None, None, None, None])
            per_case[i][n][order] = p
            per_case[i][n][2 + order] = raw
        verdicts = [self._verdict(case, per_case[i]) for i, case in enumerate(cases)]
        return [replace(v, warnings=v.warnings + (cut[i],)) if i in cut else v for i, v in enumerate(verdicts)]

    def _verdict(self, case: Case, by_prefix: dict[int, list]) -> Verdict:
        final = by_prefix[max(by_prefix)]
        raw = json.dumps({"order0": final[2], "order1": final[3]}, ensure_ascii=False)
        if final[0] is None or final[1] is None:
            why = "; ".join(_said(final, "error"))  # the backend's reason (a timeout, an HTTP error, no letter)
            return failed_verdict(case, self.name, "no usable answer from the judge in at least one presentation order"
                                  + (f": {why}" if why else ""), raw)
        p_orders = answer0_by_order(final)
        # one belief per turn before the last; NaN marks a turn where the judge gave no usable answer
        beliefs = tuple(
            order_average(answer0_by_order(v)) if None not in v[:2] else math.nan
            for n, v in sorted(by_prefix.items()) if n != max(by_prefix)
        )
        verdict = decided_verdict(case, self.name, p_orders, raw, beliefs)
        notes = _said(final, "note")  # e.g. a letter parsed from text where the server gave no log-probabilities
        return replace(verdict, warnings=verdict.warnings + notes) if notes else verdict

    def _probabilities(self, msgs: list) -> tuple[list[float | None], list[Any]]:
        """Probability of the letter shown first (A) for each prompt, or None when unusable."""
        if self.mode == "text":
            reqs = [GenRequest(m, Sampling(temperature=0.0, max_new_tokens=12)) for m in msgs]
            results = self.policy.submit_generate(reqs).result()
            out = []
            for r in results:
                parsed = parse_verdict(r.text)
                out.append(None if parsed is None else (parsed[1] if parsed[0] == 0 else 1.0 - parsed[1]))
            return out, [{"text": r.text, "error": r.error} if r.error else r.text for r in results]
        prefix = self.prompts["judge"]["prefix"]
        results = self.policy.submit_score([ScoreRequest(m, prefix, CANDIDATES) for m in msgs]).result()
        probs: list[float | None] = []
        for r in results:
            pa, pb = (math.exp(x) for x in r.logprobs)
            ok = math.isfinite(pa) and math.isfinite(pb) and pa + pb >= self.min_letter_mass
            probs.append(pa / (pa + pb) if ok else None)
        raws = [{"logprobs": dict(zip("AB", r.logprobs)), "top": r.top,
                 **{k: getattr(r, k) for k in ("error", "note") if getattr(r, k, None)}} for r in results]
        return probs, raws
