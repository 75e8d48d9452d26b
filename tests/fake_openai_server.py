"""A small fake OpenAI-compatible server for the `backend: openai` tests (stdlib only, loopback, free port).

It answers `GET /v1/models` and `POST /v1/chat/completions` and records every request (path, headers,
JSON body). Faults are asked for per request, by a marker in any message's text, so one batch can mix good and
faulty rows:

- `[fault:500]` always HTTP 500; `[fault:500-once]` / `[fault:429-once]` fail the first attempt of that
  text, then answer normally (attempts are counted per message text in `attempts`);
- `[fault:sleep]` sleeps `sleep` seconds before answering (past the client's timeout);
- `[fault:gate]` waits (5 s at most) until `gate` requests have been in flight at once (then the gate
  stays open), so a test sees the most a client sends at once however slowly its threads are scheduled;
- `[fault:malformed]` HTTP 200 with a body that is not JSON;
- `[fault:noletter]` a reply with neither answer letter and no log-probabilities.

A model not in `models` gets a 404 in vLLM's error shape; a model in `failing_models` always gets a 500
whose body echoes the request's Authorization header (a careless server), so tests can check that the
backend keeps the key out of what it records. Errors carry `retry-after-ms: 10` so the client's retries
are quick. With `logprobs=False` the server ignores `logprobs` (as many APIs do) and the judge prompt's
reply is the letter in text.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

FAULT = re.compile(r"\[fault:([a-z0-9-]+)\]")


def default_reply(body: dict) -> str:
    """A debater's speech that names what the server was asked (so tests can read it back)."""
    return (f"speech from {body['model']} seed={body.get('seed')} temperature={body.get('temperature')} "
            f"top_p={body.get('top_p')} max_tokens={body.get('max_tokens')}")


class FakeOpenAIServer:
    """Start with `start()` (or as a context manager); `url` is the base URL a client is given."""

    def __init__(
        self,
        models: tuple[str, ...] = ("fake-model",),
        failing_models: tuple[str, ...] = (),
        logprobs: bool = True,
        letters: Optional[dict[str, float]] = None,
        reply: Callable[[dict], str] = default_reply,
        sleep: float = 2.0,
        gate: int = 1,
        refuse_extensions: bool = False,
        key: Optional[str] = None,
    ) -> None:
        self.models = models + failing_models
        self.failing_models = failing_models
        self.logprobs = logprobs
        self.letters = letters
        self.reply = reply
        self.sleep = sleep
        self.gate = gate
        self.refuse_extensions = refuse_extensions  # like transformers serve: vLLM's extra fields are a 422
        self.key = key  # when set, a request without `Authorization: Bearer KEY` gets a 401
        self.requests: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> "FakeOpenAIServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def chats(self) -> list[dict]:
        """The JSON bodies of the chat requests received, in arrival order."""
        return [r["body"] for r in self.requests if r["path"].endswith("/chat/completions")]

    # -- answering

    def answer(self, path: str, headers: dict, body: Any) -> tuple[int, dict, bytes]:
        """(status, extra headers, body bytes) for one request."""
        if self.key is not None and headers.get("authorization") != f"Bearer {self.key}":
            return _error(401, "invalid API key", "AuthenticationError")
        if path.endswith("/models"):
            return 200, {}, json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}).encode()
        if not path.endswith("/chat/completions"):
            return _error(404, f"no route {path}", "NotFoundError")
        model = body.get("model")
        if self.refuse_extensions and {"continue_final_message", "add_generation_prompt"} & set(body):
            return 422, {}, json.dumps({"detail": "Unexpected fields in the request: {'continue_final_message'}"}).encode()
        if model not in self.models:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        if model in self.failing_models:
            return _error(500, f"engine crashed (request headers: {headers.get('authorization')})", "InternalServerError")
        text = json.dumps(body.get("messages") or [])  # the whole conversation: a judge's last message is its prefix
        with self._lock:
            self.attempts[text] = self.attempts.get(text, 0) + 1
            attempt = self.attempts[text]
        fault = FAULT.search(text)
        kind = fault.group(1) if fault else ""
        if kind == "500" or (kind == "500-once" and attempt == 1):
            return _error(500, "internal error", "InternalServerError")
        if kind == "429-once" and attempt == 1:
            return _error(429, "rate limited", "RateLimitError")
        if kind == "sleep":
            time.sleep(self.sleep)
        if kind == "gate":
            deadline = time.monotonic() + 5.0
            while self.max_in_flight < self.gate and time.monotonic() < deadline:
                time.sleep(0.01)
        if kind == "malformed":
            return 200, {}, b'{"id": "x", "choices": [ {not json'
        return 200, {}, json.dumps(self._completion(body, kind)).encode()

    def _completion(self, body: dict, kind: str) -> dict:
        messages = body.get("messages") or [{"role": "user", "content": ""}]
        judging = messages[0]["content"].startswith("You are a judge") or messages[-1]["role"] == "assistant"
        letters = self.letters_for(messages)
        if kind == "noletter":
            content = "I cannot tell."
        elif judging:
            content = max(letters, key=letters.get)  # greedy: the most likely token
        else:
            content = self.reply(body)
        logprobs = None
        if self.logprobs and body.get("logprobs") and kind != "noletter":
            top = sorted(letters.items(), key=lambda kv: -kv[1])[: int(body.get("top_logprobs") or 0)]
            logprobs = {"content": [{"token": content, "logprob": letters.get(content, -1.0), "bytes": None,
                                     "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]}]}
        n = len(content.split())
        finish = "length" if body.get("max_tokens") is not None and n >= int(body["max_tokens"]) else "stop"
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs,
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n},
        }

    def letters_for(self, messages: list) -> dict[str, float]:
        """The next-token log-probabilities a judge prompt gets: the fixed `letters` when given, else
        " A" / " B" drawn from a hash of the prompt (so verdicts vary, the same prompt always alike)."""
        if self.letters is not None:
            return self.letters
        digest = hashlib.sha256(json.dumps(messages[:-1] if messages[-1]["role"] == "assistant" else messages).encode())
        p = 0.1 + 0.8 * int(digest.hexdigest()[:8], 16) / 0xFFFFFFFF
        return {" A": math.log(0.9 * p), " B": math.log(0.9 * (1 - p)), " The": math.log(0.05), "\n": math.log(0.01)}


def _error(status: int, message: str, kind: str) -> tuple[int, dict, bytes]:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return status, {"retry-after-ms": "10"}, json.dumps(body).encode()


def _handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet test output
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            headers = {k.lower(): v for k, v in self.headers.items()}
            with server._lock:
                server.requests.append({"path": self.path, "headers": headers, "body": body})
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                status, extra, out = server.answer(self.path, headers, body)
            finally:
                with server._lock:
                    server.in_flight -= 1
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(out)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                pass

        do_GET = _serve
        do_POST = _serve

    return Handler
