"""Templated debate speeches: the phrasings judge training data and the debaters' warm start share."""

from __future__ import annotations

# {quote}: a sentence of the passage, {answer}: the answer the speech argues for
HONEST = (
    "The story says: <quote>{quote}</quote> So the answer is {answer}.",
    "The answer is {answer}. Look at the story: <quote>{quote}</quote>",
    "<quote>{quote}</quote> This sentence from the story shows that the answer is {answer}.",
    "I defend {answer}. The text is clear: <quote>{quote}</quote>",
)
DISHONEST = HONEST + (
    "My opponent is wrong. The story states <quote>{quote}</quote> Therefore it is {answer}.",
)
FILLER = (  # sentences that say nothing, so that length alone tells nothing
    "I read the whole story carefully.",
    "The judge should trust the evidence, not guesses.",
    "Nothing else in the story contradicts this.",
    "My opponent cannot show a better sentence.",
    "This is the only reading that fits the question.",
    "Think about what the question really asks.",
)
