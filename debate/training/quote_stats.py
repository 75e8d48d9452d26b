"""How debaters quote: tag use, verification, and whether the honest side quotes the deciding fact.

Computed from finished debates over synthetic questions (the only ones whose deciding sentence is known);
other questions are skipped and counted as `skipped`.

The supporting rule: a verified quote (tagged or recited; its repaired passage text when repaired)
*holds the deciding fact* when the longest run of consecutive normalised words it shares with the
deciding sentence is at least min(5, the sentence's length) words long and contains the correct
answer's words. So quoting the whole sentence, or the part of it that names the answer with enough
context ("hid the red lantern in the cellar"), supports; a fragment without the answer ("Mara hid the
red lantern"), a sentence about another object or an invented sentence does not.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Optional, Sequence, Union

from debate.quotes import normalise
from debate.records import Question, Quote, Speech, Transcript
from debate.synthetic import deciding_sentence, passage_sentences
from debate.training.rewards import of_sides
from debate.training.samples import Sample

MIN_OVERLAP = 5
Questions = Union[Mapping[str, Question], Sequence[Question]]


def _by_id(questions: Questions) -> Mapping[str, Question]:
    return questions if isinstance(questions, Mapping) else {q.id: q for q in questions}


def _deciding(q: Question) -> Optional[str]:
    """The deciding sentence, or None for a question that is not synthetic."""
    try:
        return deciding_sentence(q)
    except ValueError:
        return None


def _longest_run(a: list[str], b: list[str]) -> tuple[int, int]:
    """(length, start in b) of the longest run of consecutive words shared by a and b."""
    best, start = 0, 0
    prev = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best, start = cur[j], j - cur[j]
        prev = cur
    return best, start


def quote_supports(quote: Quote, deciding: str, answer: str) -> bool:
    """Whether a quote holds the deciding fact (see the module docstring for the rule)."""
    if not quote.verified:
        return False
    qw = normalise(quote.repaired if quote.repaired is not None else quote.text).split()
    dw = normalise(deciding).split()
    aw = normalise(answer).split()
    n, start = _longest_run(qw, dw)
    if n < min(MIN_OVERLAP, len(dw)):
        return False
    run = dw[start : start + n]
    return any(run[k : k + len(aw)] == aw for k in range(len(run) - len(aw) + 1))


def speech_supports(speech: Speech, q: Question, deciding: Optional[str] = None) -> bool:
    """Whether any of the speech's quotes holds the deciding fact of question `q`."""
    deciding = deciding if deciding is not None else _deciding(q)
    if deciding is None:
        return False
    answer = q.answers[q.correct]
    return any(quote_supports(x, deciding, answer) for x in speech.quotes)


EARLY = 2  # quote_stats: a deciding sentence among the passage's first EARLY sentences counts as early


def _rate(k: int, n: int) -> float:
    return k / n if n else float("nan")


def quote_stats(transcripts: Sequence[Transcript], questions: Questions) -> dict:
    """Counts and rates over every speech of the transcripts whose question is synthetic.

    speeches, tagged (a tagged quote), verified (at least one verified quote), verified_tagged (a verified
    tagged quote), honest (side == correct), honest_supporting (an honest speech holding the deciding fact),
    dishonest, dishonest_invented (a dishonest speech with an unverified quote), quotes_per_speech,
    mean_words, and the rates of each count over its base; `skipped` counts transcripts left out.
    honest_early and honest_early_supporting count the honest speeches (and those holding the deciding fact)
    whose deciding sentence is among the passage's first `EARLY` sentences: a small policy finds those far
    more often than a deciding sentence placed later (cpu-long's comment)."""
    qs = _by_id(questions)
    c = dict(transcripts=0, skipped=0, speeches=0, tagged=0, verified=0, verified_tagged=0, honest=0,
             honest_supporting=0, honest_early=0, honest_early_supporting=0, dishonest=0, dishonest_invented=0,
             quotes=0, words=0)
    for t in transcripts:
        q = qs.get(t.question_id)
        deciding = _deciding(q) if q is not None else None
        if deciding is None:
            c["skipped"] += 1
            continue
        c["transcripts"] += 1
        early = deciding in passage_sentences(q.passage)[:EARLY]
        for s in t.speeches:
            c["speeches"] += 1
            c["quotes"] += len(s.quotes)
            c["words"] += s.n_words
            c["tagged"] += any(x.tagged for x in s.quotes)
            c["verified"] += any(x.verified for x in s.quotes)
            c["verified_tagged"] += any(x.verified and x.tagged for x in s.quotes)
            if s.side == q.correct:
                supports = speech_supports(s, q, deciding)
                c["honest"] += 1
                c["honest_supporting"] += supports
                c["honest_early"] += early
                c["honest_early_supporting"] += early and supports
            else:
                c["dishonest"] += 1
                c["dishonest_invented"] += any(not x.verified for x in s.quotes)
    n = c["speeches"]
    return {
        **{k: v for k, v in c.items() if k not in ("quotes", "words")},
        "tag_rate": _rate(c["tagged"], n),
        "verified_rate": _rate(c["verified"], n),
        "verified_tagged_rate": _rate(c["verified_tagged"], n),
        "honest_supporting_rate": _rate(c["honest_supporting"], c["honest"]),
        "dishonest_invented_rate": _rate(c["dishonest_invented"], c["dishonest"]),
        "quotes_per_speech": _rate(c["quotes"], n),
        "mean_words": _rate(c["words"], n),
    }


def _synthetic(transcripts: Sequence[Transcript], questions: Questions) -> Iterator[tuple[Transcript, Question, str]]:
    """(transcript, question, deciding sentence) for the transcripts whose question is synthetic."""
    qs = _by_id(questions)
    for t in transcripts:
        q = qs.get(t.question_id)
        deciding = _deciding(q) if q is not None else None
        if deciding is not None:
            yield t, q, deciding


def supporting_by_transcript(transcripts: Sequence[Transcript], questions: Questions) -> dict[str, bool]:
    """Per transcript id: does a speech of the honest side hold the deciding fact (the verifiable reward).
    Transcripts over non-synthetic questions are left out."""
    return {t.id: any(speech_supports(s, q, d) for s in t.speeches if s.side == q.correct)
            for t, q, d in _synthetic(transcripts, questions)}


def format_stats(s: dict) -> str:
    """One line: tag use, verified rate, honest supporting rate."""
    return (f"{s['speeches']} speeches: tagged {s['tag_rate']:.2f}, verified {s['verified_rate']:.2f}, honest supporting "
            f"{s['honest_supporting_rate']:.2f}, dishonest invented {s['dishonest_invented_rate']:.2f}, "
            f"{s['quotes_per_speech']:.2f} quotes and {s['mean_words']:.1f} words a speech")


def supporting_by_speech(transcripts: Sequence[Transcript], questions: Questions) -> dict[str, bool]:
    """Per honest speech (key `transcript id:speech index`, a sample's key): does it hold the deciding fact.
    Dishonest speeches and transcripts over non-synthetic questions are left out."""
    return {f"{t.id}:{s.index}": speech_supports(s, q, d)
            for t, q, d in _synthetic(transcripts, questions) for s in t.speeches if s.side == q.correct}


def evidence_agreement(samples: Sequence[Sample], supporting: Mapping[str, bool], margin: float = 1e-6) -> dict:
    """Does the reward follow the evidence? Within each comparison group (`Sample.group`: question, side,
    turn, branch point), every two honest speeches of which one holds the deciding fact and the other does
    not are a comparison; it agrees when the supporting speech's reward is higher (by more than `margin`),
    disagrees when lower, and ties otherwise.

    `evidence_agreement` = agreeing / comparisons (nan with none): 1.0 means the reward teaches the honest side
    to quote the deciding fact wherever its samples differ in that; 0.5 with as many disagreeing is noise.
    `evidence_comparisons` counts them (comparisons share samples, so they are not independent: no interval).
    Under `reward: verifiable` with one round it is 1.0 by construction (with more, a speech is rewarded for
    its side's quoting in any round)."""
    groups: dict[tuple, list[Sample]] = {}
    for s in samples:
        if s.key in supporting:
            groups.setdefault(s.group, []).append(s)
    agree = disagree = tie = 0
    for members in groups.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if supporting[a.key] == supporting[b.key]:
                    continue
                good, bad = (a, b) if supporting[a.key] else (b, a)
                d = good.reward - bad.reward
                agree += d > margin
                disagree += d < -margin
                tie += abs(d) <= margin
    n = agree + disagree + tie
    return {"evidence_agreement": agree / n if n else float("nan"), "evidence_comparisons": n,
            "evidence_disagreeing": disagree}


def tagged_by_speech(transcripts: Sequence[Transcript]) -> dict[str, bool]:
    """Per speech (key `transcript id:speech index`, a sample's key): does it hold a quote in tags."""
    return {f"{t.id}:{s.index}": any(x.tagged for x in s.quotes) for t in transcripts for s in t.speeches}


def pair_quoting(pairs: Sequence[tuple[Sample, Sample]], tagged: Mapping[str, bool],
                 correct: Mapping[str, int]) -> dict:
    """What the best and worst speech of each group teach about quoting at all, per role: of the honest and of
    the dishonest (best, worst) pairs, how many best and how many worst speeches hold a tagged quote. One policy
    plays both sides, so a side whose winning speeches quote less than its losing ones teaches it not to quote."""
    out: dict = {}
    for role in ("honest", "dishonest"):
        bests = {best.key for best in of_sides([best for best, _ in pairs], correct, role)}
        side = [(best, worst) for best, worst in pairs
                if best.key in bests and best.key in tagged and worst.key in tagged]
        out[f"pairs_{role}"] = len(side)
        out[f"pairs_{role}_best_tagged"] = sum(tagged[best.key] for best, _ in side)
        out[f"pairs_{role}_worst_tagged"] = sum(tagged[worst.key] for _, worst in side)
    return out
