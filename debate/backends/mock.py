"""`backend: mock`: a scripted, deterministic backend with no model, for tests and dry runs of configs.

Tokens are whitespace-separated words. By default a debater's reply names the answer its prompt asks it
to defend, and the answer letters get probabilities drawn from a hash of the prompt (so verdicts vary,
but the same prompt always gets the same verdict). Tests pass their own `reply` / `letters` scripts and
read the calls recorded on the backend.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from debate.backends.base import GenRequest, GenResult, Messages, ScoreRequest, ScoreResult

if TYPE_CHECKING:
    from debate.actors import LocalPolicy

Reply = Callable[[GenRequest, int, int], "str | GenResult"]  # (request, call number, row) -> text
Letters = Callable[[Messages], tuple[float, float]]  # judge prompt -> (mass of A, mass of B)


def default_reply(request: GenRequest, call: int, row: int) -> str:
    system = dict(request.messages).get("system", "")
    found = re.search(r'is "([^"]+)"', system)  # the default debater prompt names the answer to defend
    claim = found.group(1) if found else "my answer"
    return f"The answer is {claim}; mock speech {_digest(request.messages, request.seed)[:6]}."


def default_letters(messages: Messages) -> tuple[float, float]:
    p = 0.1 + 0.8 * int(_digest(messages)[:8], 16) / 0xFFFFFFFF
    return p, 1 - p


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class MockBackend:
    """Replies from `reply`, letter masses from `letters`; records every call. `fail` names the method
    ("generate" or "score") that raises, as a crashed model would."""

    def __init__(
        self,
        name: str = "mock",
        context_length: int = 100_000,
        reply: Optional[Reply] = None,
        letters: Optional[Letters] = None,
        fail: Optional[str] = None,
    ) -> None:
        if fail not in (None, "generate", "score"):
            raise ValueError(f"MockBackend fail={fail!r}; known: generate, score")
        self.name = name
        self.context_length = context_length
        self.reply = reply or default_reply
        self.letters = letters or default_letters
        self.fail = fail
        self.device, self.dtype = "cpu", "none"
        self.calls: list[list[GenRequest]] = []  # one list per generate call
        self.score_calls: list[list[ScoreRequest]] = []
        self.count_calls: list[list[str]] = []
        self.truncate_calls: list[list[str]] = []

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        requests = list(requests)
        self.calls.append(requests)
        if self.fail == "generate":
            raise RuntimeError(f"{self.name}: generation failed (mock backend, fail=generate)")
        out = []
        for row, r in enumerate(requests):
            res = self.reply(r, len(self.calls) - 1, row)
            if isinstance(res, str):
                res = GenResult(res, n_tokens=len(res.split()), hit_limit=False)
            out.append(res)
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        requests = list(requests)
        self.score_calls.append(requests)
        if self.fail == "score":
            raise RuntimeError(f"{self.name}: scoring failed (mock backend, fail=score)")
        out = []
        for r in requests:
            masses = self.letters(r.messages)
            logprobs = tuple(math.log(m) if m > 0 else -math.inf for m in masses)
            out.append(ScoreResult(logprobs=logprobs, top=tuple((c, round(lp, 4)) for c, lp in zip(r.candidates, logprobs))))
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self.count_calls.append(list(texts))
        return [len(t.split()) for t in texts]

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        self.truncate_calls.append(list(texts))
        return [" ".join(t.split()[:m]) for t, m in zip(texts, max_tokens)]


def mock_policy(name: str = "mock", **kwargs: object) -> "LocalPolicy":
    """A driver-side policy handle on a `MockBackend(name, **kwargs)`; the backend is `handle.backend`."""
    from debate.actors import LocalPolicy, PolicyServer
    from debate.configs import PolicyConfig

    backend = MockBackend(name, **kwargs)  # type: ignore[arg-type]
    return LocalPolicy(PolicyServer(PolicyConfig(name, backend="mock"), backend=backend))
