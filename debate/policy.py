"""The Policy interface: what the engine, the judges and the tournament call on a policy handle.

A handle wraps one backend, in the driver (`LocalPolicy`) or in a Ray actor (`RemotePolicy`); both
satisfy `Policy`. Generation and scoring return pending results so that several policies work at once;
token counting and truncation are batched, one call per list of texts.
"""

from __future__ import annotations

from typing import Protocol, Sequence, TypeVar, runtime_checkable

from debate.backends.base import GenRequest, GenResult, ScoreRequest, ScoreResult

T = TypeVar("T", covariant=True)


class Pending(Protocol[T]):
    """A result that may still be computing; `result()` waits for it (and raises the call's error)."""

    def result(self) -> T: ...


@runtime_checkable
class Policy(Protocol):
    """A model behind a backend, as the driver sees it; every method takes a whole batch."""

    name: str
    context_length: int

    def submit_generate(self, requests: Sequence[GenRequest]) -> Pending[list[GenResult]]: ...

    def submit_score(self, requests: Sequence[ScoreRequest]) -> Pending[list[ScoreResult]]: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]: ...
