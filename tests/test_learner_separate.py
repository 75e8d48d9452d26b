"""The separate learner layout on the tiny random model: the learner trains in its own process (in-process
here) and hands each new LoRA adapter, by path with its version, to an ordinary generating policy; the
transformers backend's `set_adapter` loads it; a run stores the same games as the shared layout; resume
hands the checkpoint's adapter over again; bad layouts are clear config errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

from debate.backends.base import GenRequest, Sampling
from debate.configs import ConfigError, PolicyConfig
from debate.training.logprobs import completion_logps
from debate.training.samples import Sample
from tests.test_selfplay import handles, letters_from_length, tiny_cfg

SPEECHES = ["The red lantern is in the cellar.", "Answer: B A B", "Debater for A: quote the cellar"]


def separate(cfg, tiny_dir: Path, folder: Path | None = None, device: str = "cpu", num_gpus: float = 0.0):
    from debate.backends.mock import mock_policy
    from debate.training.server import start_learner

    learner_cfg = PolicyConfig("current", model=str(tiny_dir), device=device, dtype="float32", num_gpus=num_gpus)
    handle = start_learner(cfg, learner_cfg, "separate", folder)
    return handle, [mock_policy("rm", letters=letters_from_length), mock_policy("heldout")]


def _samples(backend) -> list[Sample]:
    out = []
    for i, (text, reward) in enumerate(zip(SPEECHES, (1.0, -1.0, 0.5))):
        prompt = backend.render([("system", "You argue."), ("user", f"Where is the lantern? {'A B ' * i}")])
        out.append(Sample(key=f"s{i}", transcript_id=f"t{i}", question_id="q0", side=0, role="debater_a", turn=0,
                          prompt=prompt, completion=text, reward=reward))
    return out


def _seq_logps(model, tokenizer, samples) -> torch.Tensor:
    logp, mask = completion_logps(model, tokenizer, samples, "cpu", grad=False)
    return (logp * mask).sum(1)


def _requests(n: int = 3) -> list[GenRequest]:
    return [GenRequest(messages=[("system", "You argue."), ("user", f"Where is the lantern? {'B A ' * i}")],
                       sampling=Sampling(temperature=1.0, top_p=1.0, max_new_tokens=10), seed=100 + i) for i in range(n)]


def test_hand_over_serves_the_learners_weights_and_version(tmp_path, tiny_model_dir):
    cfg = tiny_cfg(tmp_path / "results", lr=5e-2, epochs=3)
    handle, _ = separate(cfg, tiny_model_dir, tmp_path / "adapters")
    server, gen = handle.learner.server, handle.generator.server
    learner, backend = server.learner, gen.backend
    assert backend is not server.backend and backend.model is not learner.model  # two copies of the model
    samples = _samples(server.backend)
    base = _seq_logps(backend.model, backend.tokenizer, samples)
    assert handle.call("version") == 0 and gen.version() == 0 and backend.adapter is None

    out = handle.call("update", samples)  # DPO on the best and worst of the group
    assert out["version"] == learner.version == 1
    assert handle.call("version") == gen.version() == 1 and backend.adapter[1] == 1
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["version-0001"]
    trained = _seq_logps(learner.model, server.backend.tokenizer, samples)
    served = _seq_logps(backend.model, backend.tokenizer, samples)
    assert (trained - base).abs().max() > 1e-2  # the update moved the policy, so a missed hand-over would show
    torch.testing.assert_close(served, trained, atol=1e-5, rtol=0)
    # the same texts from the same seeds, and the reference (adapter off) is the learner's reference
    reqs = _requests()
    assert [r.text for r in gen.generate(reqs)] == [r.text for r in server.generate(reqs)]
    assert [r.text for r in gen.generate(reqs, reference=True)] == [r.text for r in server.generate(reqs, reference=True)]
    torch.testing.assert_close(_seq_logps(backend.model, backend.tokenizer, samples), trained, atol=1e-5, rtol=0)

    handle.call("update", samples)  # a second adapter replaces the first, in the backend and on disk
    assert handle.call("version") == 2 and sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["version-0002"]
    torch.testing.assert_close(_seq_logps(backend.model, backend.tokenizer, samples),
                               _seq_logps(learner.model, server.backend.tokenizer, samples), atol=1e-5, rtol=0)
    assert len(backend._peft.peft_config) == 1  # the old adapter was deleted, not kept beside the new one


def test_transformers_set_adapter_loads_a_peft_folder(tmp_path, tiny_model_dir):
    from debate.backends.hf import TransformersBackend
    from debate.training.learner import Learner

    torch.manual_seed(0)
    learner = Learner(TransformersBackend(tiny_model_dir, device="cpu", dtype="float32", name="l"),
                      tiny_cfg(tmp_path, lr=5e-2, epochs=3))
    samples = _samples(learner.backend)
    learner.update(samples)
    path, version = learner.save_adapter(tmp_path / "a1")
    trained = _seq_logps(learner.model, learner.backend.tokenizer, samples)
    backend = TransformersBackend(tiny_model_dir, device="cpu", dtype="float32", name="g")
    base = _seq_logps(backend.model, backend.tokenizer, samples)
    state = torch.get_rng_state()
    assert backend.set_adapter(path, version) == 1
    assert torch.equal(torch.get_rng_state(), state)  # loading an adapter draws no random numbers of the caller's
    torch.testing.assert_close(_seq_logps(backend.model, backend.tokenizer, samples), trained, atol=1e-5, rtol=0)
    assert backend.set_adapter(None) is None  # the base model again: the layers switched off
    torch.testing.assert_close(_seq_logps(backend.model, backend.tokenizer, samples), base, atol=1e-6, rtol=0)
    assert backend.set_adapter(path, version) == 1  # switched back on
    torch.testing.assert_close(_seq_logps(backend.model, backend.tokenizer, samples), trained, atol=1e-5, rtol=0)
    assert backend.set_adapter(path) == 2  # no version: one more than the last
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        backend.set_adapter(tmp_path)
    with pytest.raises(ValueError, match="version must be >= 1"):
        backend.set_adapter(path, 0)
    with pytest.raises(RuntimeError, match="trained in this process"):
        learner.backend.set_adapter(path, 1)  # the learner's own (PEFT) model takes no adapter from a folder


def _games(store, run: str, tag: str = "") -> dict:
    """A run's games by what was planned (kind, iteration, question, sample, seats; ids differ by run), with
    their speeches' texts."""
    return {(t.tags, t.question_id, t.sample, t.seats): [(s.role, s.text) for s in t.speeches]
            for t in store.transcripts(run) if tag in t.tags or not tag}


def test_separate_run_stores_the_shared_runs_games(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from arenas.selfplay import run_training

    # the same run name in two stores: the games' ids, and so their sampling seeds, are the same (and each
    # store gets a cache of its own, since each run stores its final policy as debater:r)
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache-shared"))
    cfg = tiny_cfg(tmp_path / "shared", iterations=1)
    learner, judges = handles(cfg, tiny_model_dir)
    shared = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges)
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache-apart"))
    cfg = tiny_cfg(tmp_path / "apart", iterations=1)
    learner, judges = separate(cfg, tiny_model_dir)
    apart = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges)
    out = capsys.readouterr().out
    assert "learner: shared" in out and "learner: separate" in out

    zero = _games(shared.store, "r", "iteration-0")
    assert len(zero) == 2 * 2 and all(zero.values()) and zero == _games(apart.store, "r", "iteration-0")
    # and the same games after the update: the adapter handed over is the learner's, exactly
    a, b = _games(shared.store, "r", "iteration-1"), _games(apart.store, "r", "iteration-1")
    assert len(a) == 3 * 2 + 2 * 4 and a == b
    rows = {r["iteration"]: r for r in apart.rows}
    assert rows[1]["units"] > 0 and rows[1]["version"] == 1, rows[1]
    assert rows[0]["eval_version"] == 0 and rows[1]["rollout_version"] == 0 and rows[1]["eval_version"] == 1
    assert [(r.get("rollout_version"), r["eval_version"]) for r in shared.rows] == \
           [(r.get("rollout_version"), r["eval_version"]) for r in apart.rows]
    stored = yaml.safe_load(apart.store.run("r").config)
    assert stored["learner"] == "separate" and yaml.safe_load(shared.store.run("r").config)["learner"] == "shared"
    assert (tmp_path / "apart" / "r" / "adapters" / "version-0001" / "adapter_config.json").exists()


def test_resume_hands_the_checkpoints_adapter_over(tmp_path, tiny_model_dir, monkeypatch):
    from arenas.selfplay import checkpoint_dir, run_training

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache-whole"))
    cfg = tiny_cfg(tmp_path / "whole", iterations=2)
    learner, judges = separate(cfg, tiny_model_dir)
    whole = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges)
    assert [r.get("rollout_version") for r in whole.rows] == [None, 0, 1]

    # the same run (same name, so the same games and seeds) stopped after iteration 1; a cache of its own,
    # since each run stores its final policy as debater:r
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache-cut"))
    cut, cut_one = tiny_cfg(tmp_path / "cut", iterations=2), tiny_cfg(tmp_path / "cut", iterations=1)
    first, judges = separate(cut_one, tiny_model_dir)
    run_training(cut_one, run="r", progress=False, learner=first, judge_policies=judges)
    samples = _samples(first.learner.server.backend)
    trained = _seq_logps(first.learner.server.learner.model, first.learner.server.backend.tokenizer, samples)

    # new actors (what a kill leaves), resumed from the checkpoint of iteration 1
    again, judges = separate(cut, tiny_model_dir)
    gen = again.generator.server.backend
    assert again.call("version") == 0
    resumed = run_training(cut, run="r", resume=True, progress=False, learner=again, judge_policies=judges)
    assert [r["iteration"] for r in resumed.rows] == [0, 1, 2]
    assert resumed.rows[2]["rollout_version"] == 1  # iteration 2's rollouts came from the restored adapter
    a, b = _games(whole.store, "r", "iteration-2"), _games(resumed.store, "r", "iteration-2")
    assert len(a) == 3 * 2 + 2 * 4 and a == b  # rollouts from the restored adapter, then the same update and evaluation
    assert gen.adapter is not None and gen.adapter[1] == resumed.rows[2]["eval_version"] == 2

    fresh, _ = separate(cut, tiny_model_dir, tmp_path / "handover")
    state = fresh.call("load", str(checkpoint_dir(cut, "r", 1)))
    assert state["version"] == fresh.call("version") == 1
    served = fresh.generator.server.backend
    torch.testing.assert_close(_seq_logps(served.model, served.tokenizer, samples), trained, atol=1e-5, rtol=0)


def test_bad_layouts_are_config_errors(tmp_path, tiny_model_dir):
    from arenas.selfplay import run_training
    from debate.training.server import resolve_layout

    with pytest.raises(ConfigError, match="learner: separate hands the generating policy a LoRA adapter.*method: full"):
        tiny_cfg(tmp_path, method="full", learner="separate")
    with pytest.raises(ConfigError, match="generator_backend: only learner: separate"):
        tiny_cfg(tmp_path, learner="shared", generator_backend="transformers")
    with pytest.raises(ConfigError, match="learner.*known: 'auto', 'shared' or 'separate'"):
        tiny_cfg(tmp_path, learner="apart")
    assert resolve_layout(tiny_cfg(tmp_path)) == "shared"  # auto on a CPU
    assert resolve_layout(tiny_cfg(tmp_path, device="cpu", generator_backend="transformers")) == "shared"
    assert resolve_layout(tiny_cfg(tmp_path, device="cuda", generator_backend="transformers")) == "separate"
    assert resolve_layout(tiny_cfg(tmp_path, device="cuda")) == "shared"  # no generating backend configured
    assert resolve_layout(tiny_cfg(tmp_path, learner="separate")) == "separate"
    cfg = tiny_cfg(tmp_path / "results", learner="separate")
    learner, judges = handles(cfg, tiny_model_dir)  # a shared learner for a config that asks for separate
    with pytest.raises(ConfigError, match="learner: the config asks for separate, but the learner passed in is shared"):
        run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges)
    assert not (tmp_path / "results").exists()  # refused before anything was stored
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match="generator_backend: vllm is not installed"):
            resolve_layout(tiny_cfg(tmp_path, learner="separate", generator_backend="vllm"))


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_hand_over_between_ray_actors(tmp_path, tiny_model_dir, device):
    """The same hand-over with the learner and the generating policy in two Ray actors (two processes); on
    cuda each asks Ray for a share of the GPU, as the training loop's actors do."""
    import json

    import ray

    from debate.actors import start_ray
    from debate.configs import RayConfig
    from debate.training.checkpoint import CheckpointError

    cfg = tiny_cfg(tmp_path / "results", lr=0.2, epochs=5, use_ray=True, device=device)
    start_ray(RayConfig(num_cpus=2))
    try:
        handle, _ = separate(cfg, tiny_model_dir, tmp_path / "adapters", device, 0.5 if device == "cuda" else 0.0)
        assert str(handle.device).startswith(device) and str(handle.learner.device).startswith(device)
        samples = _samples(_local_backend(tiny_model_dir))
        reqs = _requests()
        before = [r.text for r in handle.generator.call("generate", reqs, False)]
        assert handle.call("update", samples)["version"] == 1 and handle.call("version") == 1
        served = [r.text for r in handle.generator.call("generate", reqs, False)]
        assert served == [r.text for r in handle.learner.call("generate", reqs, False)]
        assert served != before  # the adapter changed what the generating actor writes
        assert [r.text for r in handle.generator.call("generate", reqs, True)] == before  # reference: adapter off
        # a checkpoint of another base model: the actor's clear error reaches the caller as raised, not as a trace
        folder = tmp_path / "ckpt"
        handle.call("save", str(folder), 1, {})
        state = json.loads((folder / "state.json").read_text())
        state["identity"]["fingerprint"] = "0" * 16
        (folder / "state.json").write_text(json.dumps(state))
        with pytest.raises(CheckpointError, match="ckpt was made for another base model") as caught:
            handle.call("load", str(folder))
        assert type(caught.value) is CheckpointError
        handle.close()
    finally:
        ray.shutdown()


def _local_backend(tiny_dir: Path):
    from debate.backends.hf import TransformersBackend

    return TransformersBackend(tiny_dir, device="cpu", dtype="float32", name="local")
