"""The one Backend interface: chat messages in, text (and answer-letter log-probabilities) out, batched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

Messages = tuple[tuple[str, str], ...]  # ((role, content), ...)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one request; temperature 0 means greedy."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 96

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"sampling.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class GenRequest:
    messages: Messages
    sampling: Sampling
    seed: int = 0


@dataclass(frozen=True)
class GenResult:
    text: str
    n_tokens: int
    hit_limit: bool  # stopped by max_new_tokens rather than end of sequence
    error: str | None = None


@dataclass(frozen=True)
class ScoreRequest:
    """Ask for the log-probabilities of candidate next tokens after an assistant prefix."""

    messages: Messages
    prefix: str  # text the assistant's reply starts with, e.g. "Answer:"
    candidates: tuple[str, ...]  # e.g. (" A", " B")


@dataclass(frozen=True)
class ScoreResult:
    logprobs: tuple[float, ...]  # one per candidate (first token of each)
    top: tuple[tuple[str, float], ...]  # the top next tokens, kept as the judge's raw output
    error: str | None = None  # why this row has no usable log-probabilities (logprobs are then -inf)
    note: str | None = None  # how a usable answer was got otherwise (e.g. a letter parsed from text)


class Backend(Protocol):
    """What every backend does; always batched."""

    name: str
    context_length: int

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]: ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        """Each text cut to its own token limit (pairwise), in one call."""
        ...


def render_chat(tokenizer: Any, msgs: Messages, prefix: str = "", generation_prompt: bool = True) -> str:
    """The prompt text a chat-templated model sees, with the assistant's reply started by `prefix`."""
    chat = [{"role": r, "content": c} for r, c in msgs]
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation_prompt) + prefix


def count_with(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Token counts of `texts` (no special tokens), in one tokenizer call."""
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def truncate_with(tokenizer: Any, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
    """Each text cut to its own token limit, in one tokenizer call."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(i[:m]) for i, m in zip(ids, max_tokens)]


def messages(*pairs: tuple[str, str]) -> Messages:
    return tuple((r, c) for r, c in pairs)


class Done:
    """An already-computed result with the interface of a pending one."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value
