"""Quote checking: which passages a debater quotes, whether they are really in the hidden passage.

Debaters quote inside `<quote>...</quote>`. A quote is verified when its normalised text occurs
word-aligned in the normalised passage, or when a bounded fuzzy repair finds a passage window close
enough in character-level Levenshtein distance. In "tags+recite" mode untagged spans of the speech
that occur verbatim in the passage (at least `min_words` words) are marked too, because small
models recite passage sentences instead of using tags. The judge sees verified quotes as
`<v_quote>` and unverified ones as `<u_quote>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
from rapidfuzz.distance import Levenshtein

from debate.records import Quote

QUOTE_MODES = ("tags", "tags+recite")

# Word separators: whitespace and every kind of dash (so "well-known" == "well known").
_TOKEN = re.compile(r"[^\s\-\u2010\u2011\u2012\u2013\u2014\u2015\u2212]+")
_NON_WORD = re.compile(r"[\W_]+")
_TAGGED = re.compile(
    r"<\s*quote\s*>(.*?)(?:<\s*/\s*quote\s*>|(?=<\s*quote\s*>)|\Z)", re.IGNORECASE | re.DOTALL
)
# Tags a debater must not write itself: a self-made <v_quote> would fake a verification.
_FORGED = re.compile(r"<\s*/?\s*(?:[uv]_quote|quote)\s*>", re.IGNORECASE)
_MARKUP = re.compile(r"<[^<>]*>")
_CANDIDATES = 5  # passage alignments examined by the fuzzy repair
_SLACK = 2  # window lengths and starts tried around an alignment: +-2 words


@dataclass(frozen=True)
class QuoteRules:
    """How strictly quotes are checked; recorded with every run."""

    mode: str = "tags"  # "tags" or "tags+recite"
    min_words: int = 5  # recite: shortest untagged span counted
    max_edit_ratio: float = 0.1  # fuzzy repair bound: edits <= ratio * len(normalised quote)
    max_edits: int = 20

    def __post_init__(self) -> None:
        if self.mode not in QUOTE_MODES:
            raise ValueError(f"quote mode {self.mode!r} unknown; known modes: {', '.join(QUOTE_MODES)}")
        if self.min_words < 1:
            raise ValueError(f"quote min_words must be >= 1, got {self.min_words}")
        if not 0.0 <= self.max_edit_ratio <= 1.0:
            raise ValueError(f"quote max_edit_ratio must be in [0, 1], got {self.max_edit_ratio}")
        if self.max_edits < 0:
            raise ValueError(f"quote max_edits must be >= 0, got {self.max_edits}")


def _words(text: str) -> list[tuple[str, int, int]]:
    """Normalised words of `text` with the (start, end) of each in the original text."""
    out = []
    for m in _TOKEN.finditer(text):
        word = _NON_WORD.sub("", m.group().lower())
        if word:
            out.append((word, m.start(), m.end()))
    return out


def normalise(text: str) -> str:
    """Lowercase, dashes as spaces, punctuation (curly quotes included) dropped, whitespace collapsed."""
    return " ".join(w for w, _, _ in _words(text))


@dataclass(frozen=True)
class _Index:
    """A passage prepared for matching."""

    text: str
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]  # original-text span of each word
    offsets: np.ndarray  # start of each word in `joined`, plus a final len(joined) + 1
    joined: str  # " ".join(words), padded with a space either side
    positions: dict[str, np.ndarray]


@lru_cache(maxsize=8)
def _index(passage: str) -> _Index:
    ws = _words(passage)
    words = tuple(w for w, _, _ in ws)
    offsets = np.zeros(len(words) + 1, dtype=np.int64)
    pos = 0
    for k, w in enumerate(words):
        offsets[k] = pos
        pos += len(w) + 1
    offsets[len(words)] = pos
    table: dict[str, list[int]] = {}
    for k, w in enumerate(words):
        table.setdefault(w, []).append(k)
    return _Index(
        text=passage,
        words=words,
        spans=tuple((s, e) for _, s, e in ws),
        offsets=offsets,
        joined=" " + " ".join(words) + " ",
        positions={w: np.asarray(p, dtype=np.int64) for w, p in table.items()},
    )


@lru_cache(maxsize=8)
def _ngrams(passage: str, n: int) -> dict[tuple[str, ...], list[int]]:
    words = _index(passage).words
    table: dict[tuple[str, ...], list[int]] = {}
    for k in range(len(words) - n + 1):
        table.setdefault(words[k : k + n], []).append(k)
    return table


def _repair(qwords: list[str], index: _Index, bound: int) -> Optional[tuple[int, int, int]]:
    """Best word window (start, end, distance) within `bound` edits of the quote, if any."""
    n, m = len(index.words), len(qwords)
    if n == 0:
        return None
    # Each intact quote word votes for the alignment (passage start) it implies; edits shift the
    # alignment by a word or two, so votes are pooled over neighbouring alignments.
    votes = np.zeros(n + m, dtype=np.int64)
    for k, w in enumerate(qwords):
        pos = index.positions.get(w)
        if pos is not None:
            votes[pos - k + m] += 1
    pooled = np.convolve(votes, np.ones(2 * _SLACK + 1, dtype=np.int64), mode="same")
    order = np.argsort(-pooled, kind="stable")
    starts: list[int] = []
    for d in order:
        if pooled[d] == 0 or len(starts) >= _CANDIDATES:
            break
        s = int(d) - m
        if all(abs(s - c) > _SLACK for c in starts):
            starts.append(s)
    query = " ".join(qwords)
    best: Optional[tuple[int, int, int]] = None
    tried: set[int] = set()
    for s0 in starts:
        for s in range(max(0, s0 - _SLACK), min(n, s0 + _SLACK + 1)):
            if s in tried:
                continue
            tried.add(s)
            lo, hi = max(s + 1, s + m - _SLACK), min(n, s + m + _SLACK)
            if lo > hi:
                continue
            # `joined` starts with a pad space, so word k spans [offsets[k] + 1, offsets[k + 1]).
            first = int(index.offsets[s]) + 1
            for e in range(lo, hi + 1):
                # with score_cutoff, rapidfuzz stops early and returns bound + 1 for anything further off
                d = Levenshtein.distance(query, index.joined[first : int(index.offsets[e])], score_cutoff=bound)
                if d > bound:
                    continue
                key = (d, abs(e - s - m), s)
                if best is None or key < (best[2], abs(best[1] - best[0] - m), best[0]):
                    best = (s, e, d)
    return best


def check_quote(quote_text: str, passage: Optional[str], rules: QuoteRules) -> Quote:
    """Check one quote against the passage: exact (normalised) match, else bounded fuzzy repair."""
    qwords = [w for w, _, _ in _words(quote_text)]
    if not qwords or passage is None:
        return Quote(text=quote_text, verified=False)
    index = _index(passage)
    query = " ".join(qwords)
    if f" {query} " in index.joined:
        return Quote(text=quote_text, verified=True)
    bound = min(rules.max_edits, int(rules.max_edit_ratio * len(query)))
    if bound <= 0:
        return Quote(text=quote_text, verified=False)
    found = _repair(qwords, index, bound)
    if found is None:
        return Quote(text=quote_text, verified=False)
    s, e, d = found
    repaired = passage[index.spans[s][0] : index.spans[e - 1][1]]
    return Quote(text=quote_text, verified=True, repaired=repaired, edit_distance=d)


def _recited(segment: str, passage: str, min_words: int) -> list[tuple[int, int]]:
    """Maximal non-overlapping spans (char start, end) of `segment` found verbatim in the passage."""
    ws = _words(segment)
    if len(ws) < min_words:
        return []
    words = [w for w, _, _ in ws]
    pwords = _index(passage).words
    grams = _ngrams(passage, min_words)
    spans = []
    i = 0
    while i + min_words <= len(words):
        hits = grams.get(tuple(words[i : i + min_words]))
        if not hits:
            i += 1
            continue
        length = min_words
        for p in hits:  # leftmost-longest: extend every occurrence as far as it goes
            k = min_words
            while i + k < len(words) and p + k < len(pwords) and words[i + k] == pwords[p + k]:
                k += 1
            length = max(length, k)
        a, b = ws[i][1], ws[i + length - 1][2]
        # the speech's own punctuation around the recited words stays outside the mark
        while not segment[a].isalnum():
            a += 1
        while not segment[b - 1].isalnum():
            b -= 1
        spans.append((a, b))
        i += length
    return spans


def _outside(segment: str, passage: Optional[str], rules: QuoteRules) -> tuple[list[Quote], str]:
    """Recited quotes in untagged text and that text as the judge sees it."""
    segment = _FORGED.sub("", segment)
    if rules.mode != "tags+recite" or passage is None:
        return [], segment
    quotes, parts, last = [], [], 0
    for a, b in _recited(segment, passage, rules.min_words):
        quotes.append(Quote(text=segment[a:b], verified=True, tagged=False))
        parts.append(f"{segment[last:a]}<v_quote>{segment[a:b]}</v_quote>")
        last = b
    parts.append(segment[last:])
    return quotes, "".join(parts)


def find_quotes(
    speech_text: str, passage: Optional[str], rules: QuoteRules
) -> tuple[tuple[Quote, ...], str]:
    """Quotes of a speech in order of appearance, and the speech as the judge sees it.

    Tagged quotes become `<v_quote>` (showing the repaired passage text when repaired) or
    `<u_quote>`; recited spans (mode "tags+recite") become `<v_quote>` around the speech's words.
    Quote-like tags written by the debater outside a quote are removed. An unclosed `<quote>`
    runs to the next `<quote>` or the end of the speech.
    """
    quotes: list[Quote] = []
    parts: list[str] = []
    last = 0
    for m in _TAGGED.finditer(speech_text):
        found, shown = _outside(speech_text[last : m.start()], passage, rules)
        quotes.extend(found)
        parts.append(shown)
        inner = _FORGED.sub("", m.group(1)).strip()
        last = m.end()
        if not inner:  # an empty <quote></quote> quotes nothing: not counted as a quote
            continue
        q = check_quote(inner, passage, rules)
        quotes.append(q)
        tag = "v_quote" if q.verified else "u_quote"
        parts.append(f"<{tag}>{q.repaired if q.repaired is not None else inner}</{tag}>")
    found, shown = _outside(speech_text[last:], passage, rules)
    quotes.extend(found)
    parts.append(shown)
    return tuple(quotes), "".join(parts)


def strip_markup(text: str) -> str:
    """`text` without quote tags or any other `<...>` markup (tag contents are kept)."""
    return _MARKUP.sub("", text)
