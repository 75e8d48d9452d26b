"""The batched engine: advances every active debate turn by turn, one batched request per policy a step."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

from tqdm.auto import tqdm

from debate.backends.base import GenRequest, GenResult, Sampling
from debate.configs import EntryConfig
from debate.context import debater_passage_budget
from debate.prompts import debater_messages
from debate.protocols import Protocol, n_speeches, next_step, steps, visible_count
from debate.quotes import QuoteRules, find_quotes, strip_markup
from debate.policy import Policy
from debate.records import Question, Seat, Speech, Transcript, stable_id


@dataclass
class Debate:
    """The state of one debate while it runs: its header, question, rules and speeches so far."""

    transcript: Transcript
    question: Question
    protocol: Protocol
    speeches: list[Speech] = field(default_factory=list)
    passage: Optional[str] = None  # the passage the debaters read (possibly truncated)

    @property
    def finished(self) -> bool:
        return self.transcript.status != "running" or next_step(self.protocol, len(self.speeches)) is None


def draw_seed(seed: int, t: Transcript, place: int) -> int:
    """The sampling seed of the speech at `place` (its index in the transcript) of game `t`: from the configured
    seed and what the game is (match, question, protocol, sample, seats, tags), never the run's name, which is in
    every transcript id. So two runs of one config and seed sample with the same seeds whatever they are called, and
    two runs that differ in one setting share their sampling noise wherever their games coincide (common random
    numbers: an ablation's arms differ by the setting, not by the draw). Within a run those fields tell its games
    apart, as their ids do (a tournament's id is its match, question, seating and sample; a rollout's its
    iteration, question, sample and seats); a branch of `reward: turn` names its rollout, id and all, in its tags."""
    seats = tuple((x.role, x.entry, x.side) for x in t.seats)
    return int(stable_id(seed, t.match, t.question_id, t.protocol, t.sample, seats, t.tags, place), 16) % (2**31)


def make_speech(
    debate: Debate, index: int, role: str, turn: int, entry: str, result: GenResult, rules: QuoteRules
) -> Speech:
    """Turn a generation into a speech: enforce the word limit, check quotes, flag empty speeches."""
    words = result.text.split()
    limit = debate.protocol.word_limit
    text = " ".join(words[:limit]) if len(words) > limit else result.text
    quotes, judge_text = find_quotes(text, debate.question.passage, rules)
    return Speech(
        transcript_id=debate.transcript.id,
        index=index,
        turn=turn,
        role=role,
        side=debate.transcript.seat(role).side,
        entry=entry,
        text=text,
        quotes=quotes,
        judge_text=judge_text,
        empty=strip_markup(text).strip() == "",
        truncated=len(words) > limit or result.hit_limit,
        n_tokens=result.n_tokens,
    )


class Engine:
    """Runs debates with debater policies passed in (by policy name)."""

    def __init__(
        self,
        policies: dict[str, Policy],
        entries: Sequence[EntryConfig],
        prompts: dict,
        quote_rules: QuoteRules,
        store: Any = None,
        seed: int = 0,
        overflow: str = "truncate",
    ) -> None:
        self.policies = policies
        self.entries = {e.name: e for e in entries}
        self.prompts = prompts
        self.rules = quote_rules
        self.store = store
        self.seed = seed
        self.overflow = overflow

    def _save(self, debate: Debate, status: str, error: Optional[str] = None, warning: Optional[str] = None) -> None:
        warnings = debate.transcript.warnings + ((warning,) if warning else ())
        debate.transcript = replace(debate.transcript, status=status, error=error, warnings=warnings)
        if self.store is not None:
            self.store.update_transcript(debate.transcript)

    def fit_passages(self, debates: Sequence[Debate]) -> None:
        """Fit each passage into its debaters' context: truncate with a recorded warning, or refuse."""
        for d in debates:
            d.passage = d.question.passage or ""
        by_policy: dict[str, list[Debate]] = defaultdict(list)
        for d in debates:
            for seat in d.transcript.seats:
                by_policy[self.entries[seat.entry].policy].append(d)
        for name, group in by_policy.items():
            policy = self.policies[name]
            counts = policy.count_tokens([d.passage or "" for d in group])  # one call per policy
            cut: list[tuple[Debate, int, int]] = []
            for d, n in zip(group, counts):
                longest = max(self.entries[s.entry].max_new_tokens for s in d.transcript.seats)
                budget = debater_passage_budget(policy.context_length, longest, n_speeches(d.protocol))
                if n <= budget or d.finished:
                    continue
                if self.overflow == "refuse" or budget <= 0:
                    self._save(d, "failed", error=(
                        f"passage of question {d.question.id} has {n} tokens; policy {name}'s context of "
                        f"{policy.context_length} leaves {max(budget, 0)} for it; set context_overflow: truncate, "
                        f"shorten the passage, or lower rounds/max_new_tokens"))
                else:
                    cut.append((d, n, budget))
            if not cut:
                continue
            texts = policy.truncate_tokens([d.passage or "" for d, _, _ in cut], [b for _, _, b in cut])
            for (d, n, budget), text in zip(cut, texts):
                d.passage = text
                if not any("truncated" in w for w in d.transcript.warnings):
                    self._save(d, "running", warning=f"passage truncated from {n} to {budget} tokens for {name}'s context")

    def _request(self, d: Debate, role: str, step_index: int) -> tuple[str, GenRequest]:
        seat = d.transcript.seat(role)
        entry = self.entries[seat.entry]
        history = d.speeches[: visible_count(d.protocol, step_index)]
        msgs = debater_messages(self.prompts, entry.prompt, d.protocol, d.question, d.passage or "", seat.side, history)
        # the speech's own place in the transcript, not the count stored so far: the speakers of one simultaneous
        # step would otherwise share a seed and so their sampling noise (coupled games), and a step resumed half
        # done would draw its missing speech with another seed than the uninterrupted run
        place = visible_count(d.protocol, step_index) + [r for r, _ in steps(d.protocol)[step_index]].index(role)
        seed = draw_seed(self.seed, d.transcript, place)
        return entry.policy, GenRequest(msgs, Sampling(entry.temperature, entry.top_p, entry.max_new_tokens), seed)

    def run(self, debates: Sequence[Debate], progress: bool = True) -> list[Debate]:
        """Advance all debates to the end; each speech is stored the moment it exists."""
        for d in debates:  # judge-only protocols (blind, expert) have nothing to play
            if d.transcript.status == "running" and d.finished:
                self._save(d, "complete")
        self.fit_passages([d for d in debates if not d.finished])
        total = sum(n_speeches(d.protocol) - len(d.speeches) for d in debates if not d.finished)
        bar = tqdm(total=total, desc="speeches", unit="speech", disable=not progress, dynamic_ncols=True)
        active = [d for d in debates if not d.finished]
        while active:
            self._step(active, bar)
            for d in active:
                if d.transcript.status == "running" and d.finished:
                    self._save(d, "complete")
            active = [d for d in active if not d.finished]
        bar.close()
        return list(debates)

    def _step(self, active: list[Debate], bar: Any) -> None:
        batches: dict[str, list[tuple[Debate, str, int, GenRequest]]] = defaultdict(list)
        for d in active:
            step = next_step(d.protocol, len(d.speeches))
            assert step is not None
            k, speakers = step
            for role, turn in speakers:
                policy, req = self._request(d, role, k)
                batches[policy].append((d, role, turn, req))
        futures: dict[str, Any] = {}
        for p, items in batches.items():  # submit to every policy first, so they work at once
            try:
                futures[p] = self.policies[p].submit_generate([x[3] for x in items])
            except Exception as exc:
                futures[p] = exc
        done: dict[tuple[int, str], GenResult] = {}
        for p, items in batches.items():
            try:
                if isinstance(futures[p], Exception):
                    raise futures[p]
                results = futures[p].result()
                if len(results) != len(items):
                    raise RuntimeError(f"returned {len(results)} results for {len(items)} requests")
            except Exception as exc:  # a failed model call fails its debates, recorded with the error
                for d in {id(x[0]): x[0] for x in items}.values():
                    self._save(d, "failed", error=f"policy {p} generation failed: {type(exc).__name__}: {exc}")
                continue
            for (d, role, _, _), res in zip(items, results):
                if res.error:
                    self._save(d, "failed", error=f"policy {p} generation failed for {role}: {res.error}")
                done[(id(d), role)] = res
        new: list[Speech] = []
        for d in active:  # append in the protocol's speaker order, whatever policy answered first
            step = next_step(d.protocol, len(d.speeches))
            if d.transcript.status != "running" or step is None:
                continue
            for role, turn in step[1]:
                res = done[(id(d), role)]
                speech = make_speech(d, len(d.speeches), role, turn, d.transcript.seat(role).entry, res, self.rules)
                d.speeches.append(speech)
                new.append(speech)
        if self.store is not None and new:
            self.store.add_speeches(new)
        bar.update(sum(len(items) for items in batches.values()))


def self_play(policy: Policy, questions: Sequence[Question], protocol: Protocol, entry: EntryConfig, rules: QuoteRules,
              seed: int, run: str, kind: str, progress: bool = True) -> list[Transcript]:
    """`entry` (on `policy`) against itself on both seatings of each question, not stored; returns the
    finished transcripts with their speeches (ids from kind, seed, question and seating)."""
    from debate.prompts import load_prompts

    debates = []
    for q in questions:
        for first in (0, 1):
            seats = (Seat("debater_a", entry.name, first), Seat("debater_b", entry.name, 1 - first))
            t = Transcript(stable_id(kind, seed, q.id, first), run, kind, q.id, protocol.name, seats)
            debates.append(Debate(t, q, protocol))
    Engine({entry.policy: policy}, [entry], load_prompts("default"), rules, seed=seed).run(debates, progress=progress)
    return [replace(d.transcript, speeches=tuple(d.speeches)) for d in debates]
