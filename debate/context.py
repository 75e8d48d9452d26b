"""Context budgets: the one home for how many tokens of a model's context the text around a passage or
the speeches takes, used by the engine (debaters) and the model judge."""

from __future__ import annotations

from typing import Sequence

# Tokens taken by the fixed parts of a prompt (instructions, question, both answers, labels). They are
# estimates for the default prompts with margin, since the exact figure depends on the tokenizer.
DEBATER_PROMPT_TOKENS = 320  # a debater's prompt around the passage and the speeches so far
JUDGE_PROMPT_TOKENS = 300  # the judge's prompt around the speeches (and the expert's passage)
JUDGE_EXPERT_PROMPT_TOKENS = 400  # the expert judge's prompt, which also holds the passage
SPEECH_LABEL_TOKENS = 20  # speaker label and line breaks around each speech in the judge's prompt


def debater_passage_budget(context_length: int, longest_speech: int, n_speeches: int) -> int:
    """Tokens left for the passage in a debater's prompt: every speech of the debate plus the one being
    generated must still fit after it. May be <= 0 (nothing fits)."""
    return context_length - DEBATER_PROMPT_TOKENS - longest_speech * (n_speeches + 1)


def expert_passage_budget(context_length: int) -> int:
    """Tokens left for the passage in the expert judge's prompt."""
    return context_length - JUDGE_EXPERT_PROMPT_TOKENS


def speeches_to_drop(context_length: int, speech_tokens: Sequence[int], passage_tokens: int = 0) -> int:
    """How many early speeches the judge drops so that the rest fit its context (the last one is kept)."""
    budget = context_length - JUDGE_PROMPT_TOKENS
    used = passage_tokens + sum(speech_tokens) + SPEECH_LABEL_TOKENS * len(speech_tokens)
    first = 0
    while used > budget and first < len(speech_tokens) - 1:
        used -= speech_tokens[first] + SPEECH_LABEL_TOKENS
        first += 1
    return first
