"""Labelled debates for training and evaluating judges, every one labelled by the ground truth.

Three kinds: templated honest-versus-dishonest debates over synthetic questions (the dishonest side
quotes a verified sentence about the wrong object, or invents an unverified quote), debates generated
by the harness's own debaters, and blind cases (question and answers only). Twins of either of the first
two: the same speeches under the question about the other entity, label flipped. All are plain
`judges.base.Case` objects, so training, evaluation and tournaments judge the same prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

from debate.protocols import Protocol, get_protocol
from debate.quotes import QuoteRules, find_quotes
from debate.records import Question, Seat, Speech, Transcript, stable_id
from debate.speech_templates import DISHONEST, FILLER, HONEST
from debate.synthetic import deciding_sentence, distractor_sentence, twin_question
from debate.training.quote_stats import speech_supports
from judges.base import Case

DEBATE = get_protocol("debate", rounds=1, word_limit=200)
BLIND = get_protocol("blind")


@dataclass(frozen=True)
class Example:
    """A judge case with what the report slices it by."""

    case: Case
    kind: str  # templated, generated or blind
    trick: str = ""  # dishonest strategy: wrong-object (verified) or invented (unverified); twins add "twin"
    honest_first: bool = True
    honest_longer: bool = False

    @property
    def label(self) -> int:
        return self.case.question.correct


def presentations(examples: Sequence[Example], orders: Optional[Sequence[int]] = None) -> list[tuple[Example, int, int]]:
    """(example, presentation order, index of the correct letter) for each example in both orders, or in
    the one order given for it; order 1 shows the answers swapped."""
    out = []
    for k, ex in enumerate(examples):
        for order in (0, 1) if orders is None else (orders[k],):
            out.append((ex, order, ex.label if order == 0 else 1 - ex.label))
    return out


def _speech(t_id: str, index: int, role: str, side: int, entry: str, text: str, passage: str, rules: QuoteRules) -> Speech:
    quotes, judge_text = find_quotes(text, passage, rules)
    return Speech(t_id, index, 0, role, side, entry, text, quotes, judge_text, n_tokens=len(text.split()))


def _argument(rng: random.Random, templates: Sequence[str], quote: str, answer: str) -> str:
    text = rng.choice(templates).format(quote=quote, answer=answer)
    extra = rng.sample(FILLER, rng.randint(0, 3))  # varied length, so length alone says nothing
    return " ".join([text, *extra])


def templated(questions: Sequence[Question], seed: int, rules: QuoteRules = QuoteRules("tags", max_edit_ratio=0.0)) -> list[Example]:
    """One templated debate per question: the honest side quotes the deciding sentence (verified); the
    dishonest side quotes the sentence about another object (verified but beside the point) or an
    invented sentence (unverified; exact matching, since an invented sentence differs from a true one
    by the answer alone, which fuzzy repair would mend). Who speaks first, the phrasing and the length are random by seed."""
    out = []
    for q in questions:
        rng = random.Random(f"{seed}:{q.id}")
        right, wrong = q.answers[q.correct], q.answers[1 - q.correct]
        trick = rng.choice(("wrong-object", "invented"))
        fake = distractor_sentence(q) if trick == "wrong-object" else deciding_sentence(q).replace(right, wrong)
        honest_text = _argument(rng, HONEST, deciding_sentence(q), right)
        dishonest_text = _argument(rng, DISHONEST, fake, wrong)
        honest_first = rng.random() < 0.5
        t_id = stable_id("templated", seed, q.id)
        first_side = q.correct if honest_first else 1 - q.correct
        order = [(honest_text, q.correct), (dishonest_text, 1 - q.correct)]
        if not honest_first:
            order.reverse()
        seats = (Seat("debater_a", "template", first_side), Seat("debater_b", "template", 1 - first_side))
        speeches = tuple(
            _speech(t_id, i, role, side, "template", text, q.passage or "", rules)
            for i, ((text, side), role) in enumerate(zip(order, ("debater_a", "debater_b")))
        )
        t = Transcript(t_id, "judge-data", "templated", q.id, "debate", seats, status="complete", speeches=speeches)
        out.append(Example(Case(t, q, DEBATE), "templated", trick, honest_first,
                           len(honest_text.split()) > len(dishonest_text.split())))
    return out


def twins(examples: Sequence[Example]) -> list[Example]:
    """The twin of each debate whose dishonest side quotes the fact about the other entity (a verified quote
    holding it): the same speeches judged under the question about that entity (`twin_question`), so the
    label flips and the side that quoted the asked entity's fact is right in each. Trained side by side, the
    pair is told apart only by which entity each quote is about: on the embedded model, the top 4 layers of
    judge:embedded went from 0.599 to 0.995 on held-out templated wrong-object debates with them
    (judges/presets/embedded-twins.yaml). Debates whose twin would be decided by elimination alone (the
    dishonest side quotes nothing true) and questions that are not synthetic get no twin."""
    out = []
    for ex in examples:
        try:
            q2 = twin_question(ex.case.question)
        except ValueError:
            continue
        t = ex.case.transcript
        if not any(speech_supports(s, q2) for s in t.speeches if s.side == q2.correct):
            continue
        t2 = replace(t, id=stable_id("twin", t.id), question_id=q2.id)
        first, longer = _seating(t2, q2)
        out.append(replace(ex, case=Case(t2, q2, ex.case.protocol), trick=f"{ex.trick}-twin".lstrip("-"),
                           honest_first=first, honest_longer=longer))
    return out


def shuffled_with_twins(examples: Sequence[Example], rng: random.Random) -> list[Example]:
    """The examples in a random order, each twin right after its debate, so that most steps see both and the
    gradient that tells them apart (the entity the question names) is not averaged over other batches.
    Without twins this is a plain shuffle."""
    twin_of = {stable_id("twin", ex.case.transcript.id): ex.case.transcript.id for ex in examples}
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(twin_of.get(ex.case.transcript.id, ex.case.transcript.id), []).append(ex)
    order = list(groups.values())
    rng.shuffle(order)
    return [ex for group in order for ex in group]


def evidence_decides(ex: Example) -> bool:
    """Whether the debate's quotes decide it: the honest side quotes the deciding fact and the dishonest side
    does not. A judge that checks evidence gets these right; on the rest it can only guess or use other cues."""
    q, speeches = ex.case.question, ex.case.transcript.speeches  # not synthetic: no deciding fact, never decided
    return (any(speech_supports(s, q) for s in speeches if s.side == q.correct)
            and not any(speech_supports(s, q) for s in speeches if s.side != q.correct))


def blind(questions: Sequence[Question]) -> list[Example]:
    """Question and answers only: a sound judge is near chance here."""
    return [
        Example(Case(Transcript(stable_id("blind", q.id), "judge-data", "blind", q.id, "blind", (), status="complete"), q, BLIND), "blind")
        for q in questions
    ]


def from_transcripts(transcripts: Sequence[Transcript], questions: dict[str, Question], protocol: Protocol) -> list[Example]:
    """Debates generated by debaters, labelled by the ground truth."""
    out = []
    for t in transcripts:
        if t.status != "complete":
            continue
        q = questions[t.question_id]
        out.append(Example(Case(t, q, protocol), "generated", "", *_seating(t, q)))
    return out


def _seating(t: Transcript, q: Question) -> tuple[bool, bool]:
    """Whether the honest side speaks first, and whether its speeches have more words."""
    honest = sum(s.n_words for s in t.speeches if s.side == q.correct)
    liar = sum(s.n_words for s in t.speeches if s.side != q.correct)
    return (t.speeches[0].side == q.correct if t.speeches else True), honest > liar


def generate_debates(questions: Sequence[Question], policy: Any, max_new_tokens: int, seed: int, progress: bool = True) -> list[Example]:
    """Debates by the harness's own debaters (one round, both seatings per question), labelled."""
    from debate.configs import EntryConfig
    from debate.engine import self_play

    protocol = get_protocol("debate", rounds=1, word_limit=60)
    entry = EntryConfig("debater", policy.name, temperature=0.7, max_new_tokens=max_new_tokens)
    finished = self_play(policy, questions, protocol, entry, QuoteRules("tags+recite"), seed, "judge-data", "generated", progress)
    return from_transcripts(finished, {q.id: q for q in questions}, DEBATE)
