"""`backend: openai`: any OpenAI-compatible chat-completions server (`vllm serve`, `transformers serve`, API models).

Requests go through the official `openai` client, whose own `max_retries` (exponential back-off on 429,
5xx, timeouts and connection errors) and `timeout` are used as configured; a thread pool of `concurrency`
workers bounds the requests in flight. A request that still fails is a recorded failure on its row
(`GenResult.error` / `ScoreResult.error`, its reason named), never an exception that stops the batch.

Judges score the answer letters from `logprobs` / `top_logprobs` of one generated token after the answer
prefix, sent as a final assistant message to continue (`continue_prefix`, vLLM's `continue_final_message`
extension; plain APIs turn it off, and so must `transformers serve` 5.x, which refuses the extension with
a 422 and ignores `logprobs`, so its verdicts come from parsed letters). Where the server gives no log-probabilities, or the letters are not
among its top tokens, the letter is parsed from the reply text instead and `ScoreResult.note` says so.

The API key is read from the environment variable that `api_key_env` names, when the backend is built; it
is never stored in a config, and it is cut out of every error message this backend records.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Optional, Sequence

from debate.backends.base import GenRequest, GenResult, Messages, ScoreRequest, ScoreResult, count_with, truncate_with

if TYPE_CHECKING:
    from debate.configs import PolicyConfig

OPENAI_FIELDS = ("base_url", "api_key_env", "concurrency", "timeout", "max_retries", "continue_prefix", "tokenizer", "context_length")
DEFAULT_CONTEXT = 4096  # a server's context is unknown here: small enough for most served models
CHARS_PER_TOKEN = 3  # BPE tokenizers average about 4 characters a token on English; 3 over-counts, so texts fit
TOP_LOGPROBS = 20  # the most OpenAI's API gives
FALLBACK_TOKENS = 12  # a few tokens to find a letter in, when the server gives no log-probabilities
NO_KEY = "EMPTY"  # what servers without auth are sent (the client insists on a key)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_openai_fields(cfg: PolicyConfig) -> None:
    """PolicyConfig's cross-field rules for this backend (a ValueError names the field and the fix).

    Other backends refuse a changed OpenAI field (their models are local: a `base_url` there is a mistake);
    the defaults are taken, so a stored config with every field written out loads again.
    """
    import dataclasses

    if cfg.backend != "openai":
        defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
        changed = [f for f in OPENAI_FIELDS if getattr(cfg, f) != defaults[f]]
        if changed:
            raise ValueError(f"policy {cfg.name!r}: {changed[0]} is used only by backend openai (this policy's backend "
                             f"is {cfg.backend}); remove it, or set backend: openai")
        return
    if not cfg.base_url:
        raise ValueError(f"policy {cfg.name!r}: base_url: backend openai needs the server's URL, "
                         f"e.g. base_url: http://127.0.0.1:8000/v1")
    url = urllib.parse.urlsplit(cfg.base_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"policy {cfg.name!r}: base_url: {cfg.base_url!r} is not an http(s) URL; "
                         f"write e.g. http://127.0.0.1:8000/v1")
    if cfg.api_key_env is not None and not _ENV_NAME.match(cfg.api_key_env):
        # the value is not echoed: what does not look like a variable's name may be the key itself
        raise ValueError(f"policy {cfg.name!r}: api_key_env: give the NAME of the environment variable that holds "
                         f"the key (e.g. api_key_env: OPENAI_API_KEY), never the key itself")


def api_key(cfg: PolicyConfig) -> str:
    """The key from the environment variable `api_key_env` names; `NO_KEY` when none is named."""
    from debate.configs import ConfigError

    if cfg.api_key_env is None:
        return NO_KEY
    key = os.environ.get(cfg.api_key_env, "")
    if not key:
        raise ConfigError(f"policies.{cfg.name}.api_key_env: the environment variable {cfg.api_key_env} is not set "
                          f"(or empty); export it with the server's API key, or drop api_key_env for a server without auth")
    return key


def from_config(cfg: PolicyConfig, check: bool = True) -> "OpenAIBackend":
    """The backend a policy config describes; with `check`, the server is asked first whether it serves
    `model` (a clear error at start rather than a failed row per request)."""
    from debate.embedded import resolve_model

    backend = OpenAIBackend(
        cfg.base_url or "", cfg.model, api_key=api_key(cfg), name=cfg.name, concurrency=cfg.concurrency,
        timeout=cfg.timeout, max_retries=cfg.max_retries, continue_prefix=cfg.continue_prefix,
        context_length=cfg.context_length or DEFAULT_CONTEXT,
        tokenizer=str(resolve_model(cfg.tokenizer)) if cfg.tokenizer else None,
    )
    if check:
        backend.check_server()
    return backend


class OpenAIBackend:
    """Chat completions on an OpenAI-compatible server, `concurrency` requests at a time.

    Token counts: with `tokenizer` (a local folder) its exact counts, which match the server only if it
    serves that model; without, a chars/3 estimate (`CHARS_PER_TOKEN`) that over-counts English text, so
    what the engine and the judge cut to fit stays within the server's context.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = NO_KEY,
        name: Optional[str] = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 2,
        continue_prefix: bool = True,
        context_length: int = DEFAULT_CONTEXT,
        tokenizer: Optional[str] = None,
    ) -> None:
        from openai import OpenAI

        self.base_url, self.model = base_url, model
        self.name = name or model
        self.timeout, self.max_retries = timeout, max_retries
        self.continue_prefix = continue_prefix
        self.context_length = context_length
        self._key = api_key  # kept only to cut it out of error messages
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"openai-{self.name}")
        self.tokenizer = None
        if tokenizer:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)

    def check_server(self) -> None:
        """Ask the server for its models: an unreachable server, a refused key or a model it does not serve
        is a ConfigError naming the field. A server without a model list (404) is taken on trust."""
        import openai

        from debate.configs import ConfigError

        where = f"policies.{self.name}"
        try:
            served = [m.id for m in self.client.with_options(timeout=min(self.timeout, 30.0)).models.list()]
        except openai.NotFoundError:
            return
        except openai.AuthenticationError as exc:
            raise ConfigError(f"{where}.api_key_env: the server at {self.base_url} refused the key "
                              f"({self._reason(exc)}); check the variable api_key_env names") from None
        except openai.APIConnectionError as exc:
            raise ConfigError(f"{where}.base_url: no OpenAI-compatible server answers at {self.base_url} "
                              f"({self._reason(exc)}); start the server or fix base_url") from None
        except openai.APIError:
            return  # a server that cannot list its models may still serve; each request says what fails
        if served and self.model not in served:
            raise ConfigError(f"{where}.model: the server at {self.base_url} does not serve {self.model!r}; "
                              f"it serves: {', '.join(served)}")

    # -- generation

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        """One chat completion per request (its own temperature, top-p, max tokens and seed), in parallel."""
        return list(self._pool.map(self._generate_one, requests))

    def _generate_one(self, r: GenRequest) -> GenResult:
        try:
            completion = self.client.chat.completions.create(
                model=self.model, messages=_chat(r.messages), temperature=r.sampling.temperature,
                top_p=r.sampling.top_p, max_tokens=r.sampling.max_new_tokens, seed=r.seed,
            )
        except Exception as exc:  # whatever failed, the row records it and the batch goes on
            return GenResult("", 0, False, error=self._reason(exc))
        try:
            choice = completion.choices[0]
            text = (choice.message.content or "").strip()
            usage = completion.usage
            n = usage.completion_tokens if usage is not None and usage.completion_tokens is not None else self.count_tokens([text])[0]
            return GenResult(text, n, hit_limit=choice.finish_reason == "length")
        except Exception as exc:
            return GenResult("", 0, False, error=self._redact(f"malformed reply from {self.base_url}: {type(exc).__name__}: {exc}"))

    # -- judge scoring

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-probabilities of each candidate letter after the answer prefix, in parallel; see the module's
        docstring for the fallback to a parsed letter."""
        return list(self._pool.map(self._score_one, requests))

    def _score_messages(self, r: ScoreRequest) -> tuple[list[dict], Optional[dict]]:
        msgs = _chat(r.messages)
        if not (self.continue_prefix and r.prefix):
            return msgs, None
        msgs.append({"role": "assistant", "content": r.prefix})
        return msgs, {"continue_final_message": True, "add_generation_prompt": False}

    def _score_one(self, r: ScoreRequest) -> ScoreResult:
        failed = tuple(-math.inf for _ in r.candidates)
        msgs, extra = self._score_messages(r)
        try:
            completion = self.client.chat.completions.create(
                model=self.model, messages=msgs, max_tokens=1, temperature=0.0, logprobs=True,
                top_logprobs=TOP_LOGPROBS, extra_body=extra,
            )
            choice = completion.choices[0]
            text = choice.message.content or ""
            top = _first_top_logprobs(choice)
        except Exception as exc:
            return ScoreResult(failed, (), error=self._reason(exc) + (_PREFIX_HINT if extra and _refused(exc) else ""))
        shown = tuple((t, round(lp, 4)) for t, lp in top[:5])
        values = letter_logprobs(top, r.candidates)
        if values is not None:
            return ScoreResult(values, shown)
        why = (f"neither answer letter among the server's top {len(top)} tokens" if top
               else "the server gave no log-probabilities")
        letter = parse_letter(text, r.candidates)
        if letter is None:  # one token was not enough to see a letter: ask for a few
            try:
                completion = self.client.chat.completions.create(
                    model=self.model, messages=msgs, max_tokens=FALLBACK_TOKENS, temperature=0.0, extra_body=extra,
                )
                text = completion.choices[0].message.content or ""
            except Exception as exc:
                return ScoreResult(failed, shown, error=f"{why}; asking for a reply to parse failed: {self._reason(exc)}")
            letter = parse_letter(text, r.candidates)
        if letter is None:
            return ScoreResult(failed, shown, error=self._redact(f"{why}, and the reply {text.strip()!r} names no answer letter"))
        values = tuple(0.0 if i == letter else -math.inf for i in range(len(r.candidates)))
        return ScoreResult(values, shown, note=self._redact(f"answer letter parsed from the reply {text.strip()!r}: {why}"))

    # -- tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if self.tokenizer is not None:
            return count_with(self.tokenizer, texts)
        return [math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts]

    def truncate_tokens(self, texts: Sequence[str], max_tokens: Sequence[int]) -> list[str]:
        if self.tokenizer is not None:
            return truncate_with(self.tokenizer, texts, max_tokens)
        return [_cut(t, m * CHARS_PER_TOKEN) for t, m in zip(texts, max_tokens)]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    # -- errors

    def _reason(self, exc: BaseException) -> str:
        """Why a request failed, for the row's record: the kind, the server's message, the retries spent."""
        import openai

        retried = isinstance(exc, (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)) or (
            isinstance(exc, openai.APIStatusError) and exc.status_code in (408, 409))
        if isinstance(exc, openai.APITimeoutError):
            text = f"APITimeoutError: no reply from {self.base_url} within timeout {self.timeout:g} s"
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            text = f"APIConnectionError: cannot reach {self.base_url}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
        elif isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError)):
            text = f"malformed reply from {self.base_url}: {type(exc).__name__}: {exc}"
        elif isinstance(exc, openai.NotFoundError):
            text = f"NotFoundError: {exc} (does the server serve model {self.model!r}?)"
        else:
            text = f"{type(exc).__name__}: {exc}"
        if retried and self.max_retries:
            text += f" (after {self.max_retries} retries)"
        return self._redact(text)

    def _redact(self, text: str) -> str:
        if self._key and self._key != NO_KEY and len(self._key) >= 4:
            text = text.replace(self._key, "***")
        return text


_PREFIX_HINT = ("; a server that does not continue an assistant prefix (`continue_final_message`, refused by "
                "transformers serve) needs continue_prefix: false")


def _refused(exc: BaseException) -> bool:
    """Whether the server refused the request as malformed (400 or 422), as one refusing vLLM's fields does."""
    return getattr(exc, "status_code", None) in (400, 422)


def _chat(messages: Messages) -> list[dict]:
    return [{"role": role, "content": content} for role, content in messages]


def _first_top_logprobs(choice: Any) -> list[tuple[str, float]]:
    """(token, logprob) of the first generated position's top tokens; empty when the server gave none."""
    content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
    if not content:
        return []
    first = content[0]
    top = [(t.token, float(t.logprob)) for t in (first.top_logprobs or [])]
    return top or [(first.token, float(first.logprob))]


def letter_logprobs(top: Sequence[tuple[str, float]], candidates: Sequence[str]) -> Optional[tuple[float, ...]]:
    """Each candidate's log-probability from the top tokens, matched with surrounding spaces stripped (" A",
    "A" and "A " are one letter, their probabilities added). A candidate not among them gets -inf (it is less
    likely than every listed token); None when no candidate is among them at all."""
    wanted = [c.strip() for c in candidates]
    found: list[list[float]] = [[] for _ in candidates]
    for token, lp in top:
        if token.strip() in wanted:
            found[wanted.index(token.strip())].append(lp)
    if not any(found):
        return None
    return tuple(_logsumexp(v) for v in found)


def parse_letter(text: str, candidates: Sequence[str]) -> Optional[int]:
    """The index of the first candidate letter standing alone in `text` ("Answer: B" -> B), or None."""
    letters = [re.escape(c.strip()) for c in candidates]
    m = re.search(rf"(?<![A-Za-z0-9])({'|'.join(letters)})(?![A-Za-z0-9])", text)
    return None if m is None else [c.strip() for c in candidates].index(m.group(1))


def _logsumexp(values: Sequence[float]) -> float:
    if not values:
        return -math.inf
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _cut(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars`, back to the last whitespace when that keeps most of it (no half words)."""
    if len(text) <= max_chars:
        return text
    piece = text[:max_chars]
    space = piece.rfind(" ")
    return piece[:space] if space > max_chars // 2 else piece
