"""Parse a judge's generated text into an answer letter and a probability."""

from __future__ import annotations

import re
from typing import Optional

_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_PROB = re.compile(r"\b(0?\.\d+|1\.0+|0|1)\b")


def parse_verdict(text: str) -> Optional[tuple[int, float]]:
    """(letter index, probability of that letter) from text like "Answer: B (80%)", or None.

    The first standalone letter A or B is the choice; a percentage or a 0-1 number after it is the
    confidence (0.5 < p <= 1), defaulting to 1.0 when absent. Text naming no letter gives None.
    """
    m = re.search(r"(?<![A-Za-z])([AB])(?![A-Za-z])", text)
    if m is None:
        return None
    letter = 0 if m.group(1).upper() == "A" else 1
    rest = text[m.end():]
    p = 1.0
    pm = _PERCENT.search(rest)
    if pm:
        p = float(pm.group(1)) / 100
    else:
        qm = _PROB.search(rest)
        if qm:
            p = float(qm.group(1))
    if not 0.0 <= p <= 1.0:
        return None
    return letter, p
