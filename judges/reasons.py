"""The reason a human judge gives with a final verdict: what it is stored as, and when it is refused.

A reason is normalised before it is counted or stored (Unicode NFC, invisible format and control
characters removed, spaces and blank lines collapsed), so what is counted is what is stored. Its
minimum length counts visible characters only (letters, digits, punctuation and symbols by Unicode
category): a reason of zero-width or other invisible characters is no reason.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Optional

REASON_MIN_VISIBLE = 3
REASON_MAX_CHARS = 2000

# zero-width (non-)joiners shape Persian, Indic scripts and emoji sequences; every other format
# character (zero-width space, bidirectional overrides, soft hyphen, BOM) only hides or reorders text
_KEEP_FORMAT = {"\u200c", "\u200d"}
_VISIBLE = ("L", "N", "P", "S")  # Unicode major categories that draw a glyph on their own
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _clean_char(ch: str) -> str:
    if ch in "\n\t":
        return ch
    cat = unicodedata.category(ch)
    if cat == "Zs":
        return " "  # no-break, ideographic and other spaces count as one plain space
    if cat in ("Zl", "Zp"):
        return "\n"
    if cat in ("Cc", "Cs") or (cat == "Cf" and ch not in _KEEP_FORMAT):
        return ""  # unassigned and private-use characters stay (a newer emoji, an icon font) but count as invisible
    return ch


def normalise_reason(text: Optional[str]) -> str:
    """The reason as it is stored: NFC, invisible characters removed, runs of spaces and blank lines
    collapsed, each line and the whole trimmed."""
    text = unicodedata.normalize("NFC", (text or "").replace("\r\n", "\n").replace("\r", "\n"))
    text = "".join(_clean_char(ch) for ch in text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def visible_chars(text: str) -> int:
    """How many characters of `text` draw a glyph of their own (combining marks and spaces do not count)."""
    return sum(unicodedata.category(ch)[0] in _VISIBLE for ch in text)


def reason_problem(text: Optional[str]) -> Optional[str]:
    """Why a reason cannot be stored (too short or too long, counted after normalising), or None."""
    reason = normalise_reason(text)
    if visible_chars(reason) < REASON_MIN_VISIBLE:
        return (f"Give a short reason for your verdict: at least {REASON_MIN_VISIBLE} visible characters "
                "(spaces and invisible characters do not count).")
    if len(reason) > REASON_MAX_CHARS:
        over = len(reason) - REASON_MAX_CHARS
        return (f"Your reason is {len(reason):,} characters long; the limit is {REASON_MAX_CHARS:,}. "
                f"Shorten it by {over:,} character{'s' if over > 1 else ''} and submit again; nothing was stored.")
    return None
