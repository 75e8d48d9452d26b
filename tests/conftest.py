"""Shared fixtures: a tiny random Llama built from a config (no download), scripted policy doubles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NYU_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyu-debates"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run slow tests (real embedded model, subprocess runs)")


def pytest_collection_modifyitems(config, items):
    import importlib.util

    import torch

    if not torch.cuda.is_available():  # gpu tests run only where CUDA is present
        no_gpu = pytest.mark.skip(reason="gpu: needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(no_gpu)
    if importlib.util.find_spec("vllm") is None:  # vllm tests run in .venv-vllm (scripts/setup --vllm)
        if config.getoption("markexpr") == "vllm":  # asked for by name: a missing vLLM is an error, not a skip
            raise pytest.UsageError("-m vllm: vLLM is not installed in this environment; run scripts/setup --vllm "
                                    "and use .venv-vllm/bin/python -m pytest -m vllm")
        no_vllm = pytest.mark.skip(reason="vllm: needs vLLM (run in .venv-vllm, made by scripts/setup --vllm)")
        for item in items:
            if item.get_closest_marker("vllm"):
                item.add_marker(no_vllm)
    if config.getoption("--run-slow") or os.environ.get("DEBATE_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


TINY_CORPUS = ("Answer: A", "Answer: B", " A B A B", "The red lantern is in the cellar.", "Debater for A: quote")


def build_tiny_model(folder: Path, layers: int = 2, corpus: tuple[str, ...] = TINY_CORPUS, vocab: int = 400) -> Path:
    """A random Llama (2 layers unless told) with a byte-level BPE tokenizer trained on a few lines (`corpus`, to
    `vocab` entries: another corpus or size gives another tokenizer), saved as a model folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(corpus) * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        bos_token_id=fast.convert_tokens_to_ids("<|im_start|>"),
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir):
    from debate.backends.hf import TransformersBackend

    return TransformersBackend(tiny_model_dir, device="cpu", name="tiny")


@pytest.fixture(scope="session")
def tiny_policy(tiny_backend):
    from debate.actors import LocalPolicy, PolicyServer
    from debate.configs import PolicyConfig

    return LocalPolicy(PolicyServer(PolicyConfig("tiny", model="unused"), backend=tiny_backend))


def tiny_config(model_dir: Path, results: Path, n: int = 2, **over) -> dict:
    """Plain config data of a small tournament on the tiny model."""
    data = {
        "name": "tiny",
        "questions": {"source": "synthetic", "n": n, "seed": 3, "difficulty": "easy"},
        "policies": [{"name": "p", "model": str(model_dir), "device": "cpu", "num_cpus": 0.5},
                     {"name": "j", "model": str(model_dir), "device": "cpu", "num_cpus": 0.5}],
        "entries": [{"name": "cold", "policy": "p", "temperature": 0.0, "max_new_tokens": 12},
                    {"name": "hot", "policy": "p", "temperature": 1.0, "max_new_tokens": 12, "prompt": "assertive"}],
        "judge": {"name": "tiny-judge", "policy": "j"},
        "protocols": [{"name": "debate", "rounds": 2, "word_limit": 30}, {"name": "simultaneous", "rounds": 1},
                      {"name": "consultancy", "rounds": 1}, {"name": "blind"}, {"name": "expert"}],
        "results": str(results),
    }
    data.update(over)
    return data
