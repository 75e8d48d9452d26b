"""The reward model: a tiny run on the tiny model (its accuracy is noise; files, keys, seeds and caching)."""

from __future__ import annotations

import json

import pytest

from debate.configs import ConfigError
from debate.training.config import TrainConfig
from judges import reward_model as rm_mod
from judges.reward_model import ensure_reward_model, init_judge_path, judge_config, seeds


def _cfg(model_dir, **rm) -> TrainConfig:
    r = dict(name="rm-tiny", init=str(model_dir), policy_questions=1, templated_questions=2, val_questions=1,
             test_questions=1, train_layers=1, epochs=1, batch_debates=2)
    r.update(rm)
    return TrainConfig(device="cpu", threads=1, max_new_tokens=6, reward_model=r)


def test_judge_train_defaults_unchanged():
    from judges.train import JudgeTrainConfig

    cfg = JudgeTrainConfig()
    assert cfg.debater_model == ""
    assert (cfg.base_model, cfg.train_seed, cfg.val_seed, cfg.test_seed, cfg.generated_train) == ("embedded", 101, 102, 103, 16)


def test_seeds_and_config(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir)
    assert seeds(cfg) == {"train": 301, "validation": 302, "test": 303}
    j = judge_config(cfg, tmp_path)
    assert (j.train_seed, j.val_seed, j.test_seed, j.debater_model, j.generated_test) == (301, 302, 303, str(tmp_path), 0)
    with pytest.raises(ConfigError, match="reward_model.seed"):
        seeds(_cfg(tiny_model_dir, seed=400))  # seed+2 = 402 would be the held-out questions
    assert j.objective == "ce" and judge_config(_cfg(tiny_model_dir, objective="ce+bt"), tmp_path).objective == "ce+bt"
    with pytest.raises(ConfigError, match="objective"):
        _cfg(tiny_model_dir, objective="mse")


def test_reward_model_objectives_are_the_judge_trainers():
    """debate/ may not import judges/, so the config lists the judge objectives itself; they must not drift."""
    import typing

    from debate.training.config import RewardModelConfig
    from judges.train import OBJECTIVES

    assert typing.get_args(typing.get_type_hints(RewardModelConfig)["objective"]) == OBJECTIVES


def test_missing_init_judge_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="debate judge train --preset nope"):
        init_judge_path("judge:nope")
    assert init_judge_path("judge:nope", lambda name: tmp_path / name) == tmp_path / "judge:nope"


def test_tiny_reward_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path))
    cfg = _cfg(tiny_model_dir)
    folder, meta = ensure_reward_model(cfg, tiny_model_dir, progress=False)
    assert folder == tmp_path / "judges" / "rm-tiny"
    assert (folder / "model" / "config.json").exists() and (folder / "judge.json").exists()
    judge = json.loads((folder / "judge.json").read_text())
    assert judge["config"]["debater_model"] == str(tiny_model_dir) and judge["data"]["train_examples"] == 2 + 2
    stored = json.loads((folder / "reward_model.json").read_text())
    assert stored == meta
    for kind, n in (("policy", 2), ("templated", 1)):
        for when in ("before", "after"):
            acc = meta["accuracy"][kind][when]
            assert acc["n"] == n and 0 <= acc["accuracy"] <= 1 and acc["low"] <= acc["accuracy"] <= acc["high"]
    assert meta["seeds"] == {"train": 301, "validation": 302, "test": 303}
    assert len((folder / "policy_test.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(rm_mod, "train_reward_model", lambda *a, **k: pytest.fail("retrained"))
    assert ensure_reward_model(cfg, tiny_model_dir, progress=False) == (folder, meta)


def test_a_cache_made_before_a_setting_existed_is_still_used(tiny_model_dir, tmp_path, monkeypatch):
    """reward_model.twins came later: a cache without it was made without twins, and is reused for twins: false only."""
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path))
    cfg = _cfg(tiny_model_dir)
    folder, meta = ensure_reward_model(cfg, tiny_model_dir, progress=False)
    del meta["reward_model"]["twins"]
    (folder / "reward_model.json").write_text(json.dumps(meta))
    monkeypatch.setattr(rm_mod, "train_reward_model", lambda *a, **k: pytest.fail("retrained"))
    assert ensure_reward_model(cfg, tiny_model_dir, progress=False)[0] == folder
    with pytest.raises(ConfigError, match="twins"):
        ensure_reward_model(_cfg(tiny_model_dir, twins=True), tiny_model_dir, progress=False)
