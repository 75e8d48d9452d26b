"""`backend: openai` against a fake OpenAI-compatible server on loopback: generation, judge scoring from
top_logprobs and its text fallback, faults as recorded failures, start checks, and a tournament end to end."""

from __future__ import annotations

import json
import math
import secrets
import socket
from pathlib import Path

import pytest

from debate.actors import LocalPolicy, PolicyServer
from debate.backends.base import GenRequest, Sampling, ScoreRequest, messages
from debate.backends.openai_backend import CHARS_PER_TOKEN, TOP_LOGPROBS, OpenAIBackend, letter_logprobs, parse_letter
from debate.backends.registry import make_backend
from debate.configs import ConfigError, PolicyConfig, load_tournament
from debate.prompts import load_prompts
from judges.model_judge import CANDIDATES, ModelJudge
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_judge import debate_case

KEY_VAR = "DEBATE_TEST_OPENAI_KEY"
JUDGE = messages(("system", "You are a judge."), ("user", "Which answer? A: x  B: y"))


@pytest.fixture()
def key(monkeypatch) -> str:
    value = "sk-test-" + secrets.token_hex(12)
    monkeypatch.setenv(KEY_VAR, value)
    return value


@pytest.fixture()
def server(key):
    with FakeOpenAIServer(key=key, sleep=1.0) as s:
        yield s


def policy_cfg(server: FakeOpenAIServer, name: str = "p", **over) -> PolicyConfig:
    fields = dict(backend="openai", model="fake-model", base_url=server.url, api_key_env=KEY_VAR, max_retries=1, timeout=5.0)
    return PolicyConfig(name, **{**fields, **over})


def ask(text: str, temperature: float = 0.0, top_p: float = 1.0, max_new: int = 16, seed: int = 0) -> GenRequest:
    return GenRequest(messages(("system", "You are a debater."), ("user", text)), Sampling(temperature, top_p, max_new), seed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# generation


def test_each_row_is_sent_with_its_own_sampling_and_the_key(server, key):
    backend = make_backend(policy_cfg(server, concurrency=2))
    reqs = [ask("one", 0.0, 1.0, 8, seed=1), ask("two", 0.7, 0.9, 32, seed=2), ask("three", 1.3, 0.5, 64, seed=3)]
    out = backend.generate(reqs)
    assert [r.error for r in out] == [None] * 3
    assert out[1].text == "speech from fake-model seed=2 temperature=0.7 top_p=0.9 max_tokens=32"
    assert out[0].n_tokens == len(out[0].text.split()) and out[0].hit_limit is False
    by_text = {b["messages"][-1]["content"]: b for b in server.chats()}
    for r in reqs:
        sent = by_text[r.messages[-1][1]]
        assert sent["model"] == "fake-model" and sent["messages"][0] == {"role": "system", "content": "You are a debater."}
        assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["seed"]) == (
            r.sampling.temperature, r.sampling.top_p, r.sampling.max_new_tokens, r.seed)
    assert {r["headers"]["authorization"] for r in server.requests} == {f"Bearer {key}"}
    assert server.requests[0]["path"].endswith("/models")  # the start check asked what the server serves


def test_concurrency_bounds_the_requests_in_flight(server):
    server.gate = 3  # requests wait until three have been in flight at once (or 5 s)
    backend = make_backend(policy_cfg(server, concurrency=3))
    out = backend.generate([ask(f"row {i} [fault:gate]") for i in range(7)])
    assert all(r.error is None for r in out)
    assert server.max_in_flight == 3


# judge scoring


def test_judge_scores_letters_from_top_logprobs(server):
    server.letters = {" A": math.log(0.6), "A": math.log(0.1), " B": math.log(0.2), " The": math.log(0.05)}
    backend = make_backend(policy_cfg(server))
    (res,) = backend.score([ScoreRequest(JUDGE, "Answer:", CANDIDATES)])
    assert res.error is None and res.note is None
    assert res.logprobs == pytest.approx((math.log(0.7), math.log(0.2)))  # " A" and "A" are one letter
    assert res.top[0] == (" A", round(math.log(0.6), 4))
    (sent,) = server.chats()
    assert (sent["logprobs"], sent["top_logprobs"], sent["max_tokens"], sent["temperature"]) == (True, TOP_LOGPROBS, 1, 0.0)
    assert sent["messages"][-1] == {"role": "assistant", "content": "Answer:"}
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False


def test_plain_apis_get_no_prefix_to_continue(server):
    backend = make_backend(policy_cfg(server, continue_prefix=False))
    (res,) = backend.score([ScoreRequest(JUDGE, "Answer:", CANDIDATES)])
    assert res.error is None
    (sent,) = server.chats()
    assert sent["messages"][-1]["role"] == "user"
    assert "continue_final_message" not in sent and "add_generation_prompt" not in sent


def test_a_server_refusing_the_prefix_extension_names_continue_prefix(server):
    server.refuse_extensions = True
    (res,) = make_backend(policy_cfg(server)).score([ScoreRequest(JUDGE, "Answer:", CANDIDATES)])
    assert "422" in res.error and "needs continue_prefix: false" in res.error
    (res,) = make_backend(policy_cfg(server, continue_prefix=False)).score([ScoreRequest(JUDGE, "Answer:", CANDIDATES)])
    assert res.error is None


def test_without_logprobs_the_letter_is_parsed_from_text_with_a_note(server):
    server.logprobs = False
    server.letters = {" B": 0.0}
    backend = make_backend(policy_cfg(server))
    (res,) = backend.score([ScoreRequest(JUDGE, "Answer:", CANDIDATES)])
    assert res.error is None and res.logprobs == (-math.inf, 0.0)
    assert "parsed from the reply 'B'" in res.note and "no log-probabilities" in res.note
    # through the model judge: the note lands on the verdict's warnings
    judge = ModelJudge("api-judge", LocalPolicy(PolicyServer(policy_cfg(server), backend=backend)), load_prompts("default"))
    (v,) = judge.judge([debate_case()])
    assert v.p_orders == (0.0, 1.0)  # B in both orders: answer 1, then answer 0 ...
    assert v.winner is None and "indifferent" in v.error  # ... a position-biased judge, recorded, not a tie
    server.letters = None  # letters from a hash of each prompt: the two orders differ
    (v,) = judge.judge([debate_case(1)])
    assert v.winner in (0, 1) and any("parsed from the reply" in w for w in v.warnings)


def test_a_reply_with_no_letter_is_a_recorded_failure(server):
    backend = make_backend(policy_cfg(server))
    good, bad = backend.score([ScoreRequest(JUDGE, "Answer:", CANDIDATES),
                               ScoreRequest(messages(("user", "say nothing [fault:noletter]")), "Answer:", CANDIDATES)])
    assert good.error is None
    assert bad.logprobs == (-math.inf, -math.inf)
    assert "'I cannot tell.' names no answer letter" in bad.error
    judge = ModelJudge("api-judge", LocalPolicy(PolicyServer(policy_cfg(server), backend=backend)), load_prompts("default"))
    (v,) = judge.judge([debate_case(extra=" [fault:noletter]")])
    assert v.winner is None and v.p_answer0 is None and "names no answer letter" in v.error


def test_letter_matching_and_parsing():
    assert letter_logprobs([(" A", -1.0), ("Answer", -0.1)], CANDIDATES) == (-1.0, -math.inf)
    assert letter_logprobs([("The", -0.1)], CANDIDATES) is None
    assert parse_letter("Answer: B (80%)", CANDIDATES) == 1
    assert parse_letter("An answer", CANDIDATES) is None


# faults: each a recorded failure on its row, the other rows go on


def test_faults_in_one_batch_are_recorded_per_row(server, key):
    server.sleep = 4.0  # well past the timeout, so that a slow machine's normal replies still fit in it
    backend = make_backend(policy_cfg(server, timeout=1.5, max_retries=1))
    rows = ["fine", "[fault:500]", "[fault:500-once]", "[fault:429-once]", "[fault:malformed]", "[fault:sleep]", "fine too"]
    out = dict(zip(rows, backend.generate([ask(r) for r in rows])))
    for ok in ("fine", "[fault:500-once]", "[fault:429-once]", "fine too"):
        assert out[ok].error is None and out[ok].text.startswith("speech from fake-model")
    assert out["[fault:500]"].error.startswith("InternalServerError: Error code: 500") and "after 1 retries" in out["[fault:500]"].error
    assert out["[fault:malformed]"].error.startswith("malformed reply from http://127.0.0.1")
    assert out["[fault:sleep]"].error.startswith("APITimeoutError: no reply") and "timeout 1.5 s" in out["[fault:sleep]"].error
    attempts = {r: n for text, n in server.attempts.items() for r in rows if r in text and r.startswith("[")}
    assert attempts == {"[fault:500]": 2, "[fault:500-once]": 2, "[fault:429-once]": 2, "[fault:malformed]": 1, "[fault:sleep]": 2}
    assert all(r.text == "" and r.n_tokens == 0 for r in out.values() if r.error)


def test_retries_follow_max_retries(server):
    backend = make_backend(policy_cfg(server, max_retries=3))
    (res,) = backend.generate([ask("[fault:500]")])
    assert "after 3 retries" in res.error
    assert sum(n for text, n in server.attempts.items() if "[fault:500]" in text) == 4  # max_retries + 1


def test_score_faults_are_recorded_per_row(server):
    backend = make_backend(policy_cfg(server, max_retries=0))
    reqs = [ScoreRequest(messages(("user", f"judge this {m}")), "Answer:", CANDIDATES) for m in ("", "[fault:500]", "[fault:malformed]")]
    ok, err500, malformed = backend.score(reqs)
    assert ok.error is None and math.isfinite(ok.logprobs[0])
    assert "500" in err500.error and "malformed reply" in malformed.error
    assert err500.logprobs == malformed.logprobs == (-math.inf, -math.inf)


def test_refused_connection_is_recorded_on_every_row():
    backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", "fake-model", max_retries=1, timeout=2.0)
    gens = backend.generate([ask("a"), ask("b")])
    scores = backend.score([ScoreRequest(JUDGE, "Answer:", CANDIDATES)])
    for r in [*gens, *scores]:
        assert r.error.startswith("APIConnectionError: cannot reach http://127.0.0.1") and "after 1 retries" in r.error


def test_unknown_model_is_a_recorded_failure_and_refused_at_start(server):
    direct = OpenAIBackend(server.url, "no-such-model", api_key=server.key, max_retries=1)
    (res,) = direct.generate([ask("hello")])
    assert res.error.startswith("NotFoundError: Error code: 404") and "'no-such-model'" in res.error
    assert len(server.chats()) == 1  # a 404 is not retried
    with pytest.raises(ConfigError, match=r"policies.p.model: the server at .* does not serve 'no-such-model'; it serves: fake-model"):
        make_backend(policy_cfg(server, model="no-such-model"))


# start checks and the key


def test_start_checks_name_the_field(server, monkeypatch):
    with pytest.raises(ConfigError, match=r"policies.p.base_url: no OpenAI-compatible server answers at http://127.0.0.1:\d+/v1"):
        make_backend(policy_cfg(server, base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0))
    monkeypatch.setenv("DEBATE_TEST_WRONG_KEY", "sk-wrong")
    with pytest.raises(ConfigError, match="policies.p.api_key_env: the server at .* refused the key"):
        make_backend(policy_cfg(server, api_key_env="DEBATE_TEST_WRONG_KEY"))
    monkeypatch.delenv(KEY_VAR)
    with pytest.raises(ConfigError, match=f"policies.p.api_key_env: the environment variable {KEY_VAR} is not set"):
        make_backend(policy_cfg(server))


def test_config_fields_are_checked():
    with pytest.raises(ConfigError, match="base_url: backend openai needs the server's URL"):
        PolicyConfig("p", backend="openai")
    with pytest.raises(ConfigError, match="base_url: 'localhost:8000' is not an http"):
        PolicyConfig("p", backend="openai", base_url="localhost:8000")
    with pytest.raises(ConfigError, match="api_key_env: give the NAME") as err:
        PolicyConfig("p", backend="openai", base_url="http://h/v1", api_key_env="sk-live-123")
    assert "sk-live-123" not in str(err.value)  # what looks like a key is never echoed
    with pytest.raises(ConfigError, match="base_url is used only by backend openai"):
        PolicyConfig("p", base_url="http://h/v1")
    with pytest.raises(ConfigError, match="PolicyConfig.concurrency"):
        PolicyConfig("p", backend="openai", base_url="http://h/v1", concurrency=0)
    PolicyConfig("p", backend="transformers", concurrency=8)  # a default, as a stored config writes it: taken


def test_a_careless_servers_echo_of_the_key_is_cut_out(key):
    with FakeOpenAIServer(failing_models=("flaky",), key=key) as s:
        (res,) = make_backend(policy_cfg(s, model="flaky", max_retries=0)).generate([ask("hi")])
    assert "Bearer ***" in res.error and key not in res.error


def test_token_estimate_without_a_tokenizer(server):
    backend = OpenAIBackend(server.url, "fake-model")
    text = "word " * 30
    assert backend.count_tokens([text, ""]) == [math.ceil(len(text) / CHARS_PER_TOKEN), 0]
    (cut,) = backend.truncate_tokens([text], [10])
    assert len(cut) <= 10 * CHARS_PER_TOKEN and backend.count_tokens([cut])[0] <= 10 and not cut.endswith("wor")
    assert backend.context_length == 4096


# a tournament end to end: debaters and judge on backend openai


def test_tournament_end_to_end_stores_everything_and_never_the_key(tmp_path, key):
    from arenas.tournament import questions_of, run_tournament

    data = {
        "name": "api",
        "questions": {"source": "synthetic", "n": 2, "seed": 3, "difficulty": "easy"},
        "entries": [{"name": "good", "policy": "d", "temperature": 0.7, "max_new_tokens": 24},
                    {"name": "bad", "policy": "flaky", "max_new_tokens": 24}],
        "judge": {"name": "api-judge", "policy": "j"},
        "protocols": [{"name": "debate", "rounds": 1, "word_limit": 40}, {"name": "consultancy", "rounds": 1}, {"name": "blind"}],
        "results": str(tmp_path / "results"),
    }
    first: dict = {}  # the first question, known once the config is loaded

    def reply(body: dict) -> str:  # the first question's speeches carry a marker that makes the judge's reply letterless
        marker = "[fault:noletter] " if first["q"].question in json.dumps(body["messages"]) else ""
        return f"{marker}I argue my answer, seed {body.get('seed')}."

    with FakeOpenAIServer(failing_models=("flaky-model",), key=key, reply=reply) as s:
        common = {"backend": "openai", "base_url": s.url, "api_key_env": KEY_VAR, "max_retries": 1, "timeout": 5.0, "concurrency": 4}
        data["policies"] = [{"name": "d", "model": "fake-model", **common}, {"name": "flaky", "model": "flaky-model", **common},
                            {"name": "j", "model": "fake-model", **common}]
        cfg = load_tournament(data)
        first["q"] = first_question = questions_of(cfg)[0]
        policies = {p.name: LocalPolicy(PolicyServer(p)) for p in cfg.policies}
        result = run_tournament(cfg, run="api1", progress=False, policies=policies)
    store = result.store
    ts = store.transcripts("api1")
    entries = {t.id: {seat.entry for seat in t.seats} for t in ts}
    assert len(ts) == 4 + 8 + 2
    for t in ts:
        if "bad" in entries[t.id]:  # every debate and bad's consultancies: the server's 500, retried, recorded
            assert t.status == "failed" and "InternalServerError" in t.error and "after 1 retries" in t.error
            assert "Bearer ***" in t.error
        else:
            assert t.status == "complete", t.error
    verdicts = {v.transcript_id: v for v in store.verdicts("api1")}
    complete = [t for t in ts if t.status == "complete"]
    assert set(verdicts) == {t.id for t in complete}  # every complete transcript judged, failed ones not
    letterless = [v for v in verdicts.values() if v.error and "names no answer letter" in v.error]
    assert len(letterless) == 2  # good's two consultancies on the first question
    assert all(v.question_id == first_question.id and v.winner is None for v in letterless)
    decided = [v for v in verdicts.values() if v.winner is not None]
    assert decided and all(len(v.p_orders) == 2 and 0 <= v.p_answer0 <= 1 for v in decided)
    assert any(len(t.speeches) == 1 and "I argue my answer" in t.speeches[0].text for t in complete)
    # the key's name is stored, its value nowhere in the results folder (database, WAL, config.yaml)
    assert f"api_key_env: {KEY_VAR}" in store.run("api1").config
    files = [p for p in Path(cfg.results).rglob("*") if p.is_file()]
    assert any(p.suffix == ".yaml" for p in files) and any("wal" in p.name or p.suffix in (".db", ".sqlite") for p in files)
    for p in files:
        assert key.encode() not in p.read_bytes(), p


def _bad_start_config(tmp_path: Path, policy: dict) -> dict:
    return {
        "name": "bad-start", "questions": {"source": "synthetic", "n": 1, "seed": 3},
        "policies": [policy], "entries": [{"name": "e", "policy": policy["name"]}],
        "judge": {"name": "j", "policy": policy["name"]}, "protocols": [{"name": "blind"}], "results": str(tmp_path / "results"),
    }


def test_an_unreachable_server_is_refused_before_anything_is_stored(tmp_path, key):
    """Started the way the CLI starts a run (no policies passed in): the driver asks the server first."""
    from arenas.tournament import run_tournament

    policy = {"name": "api", "backend": "openai", "model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1",
              "api_key_env": KEY_VAR, "max_retries": 0, "timeout": 2.0}
    cfg = load_tournament(_bad_start_config(tmp_path, policy))
    with pytest.raises(ConfigError, match=r"policies\.api\.base_url: no OpenAI-compatible server answers"):
        run_tournament(cfg, run="never", progress=False)
    assert not (tmp_path / "results" / "never").exists()


def test_a_missing_vllm_is_refused_before_anything_is_stored(tmp_path):
    import importlib.util

    from arenas.tournament import run_tournament

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    cfg = load_tournament(_bad_start_config(tmp_path, {"name": "v", "backend": "vllm"}))
    with pytest.raises(ConfigError, match=r"policies\.v\.backend: vllm is not installed.*scripts/setup --vllm"):
        run_tournament(cfg, run="never", progress=False)
    assert not (tmp_path / "results" / "never").exists()
