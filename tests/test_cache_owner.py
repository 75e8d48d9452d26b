"""Warm starts and training runs share the debater cache (`debater:NAME`): neither may replace the other's."""

from __future__ import annotations

import json

import pytest

from debate.cache_owner import check_run_debater, check_warm_start_folder, debater_owner, record_run_debater
from debate.configs import ConfigError


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "debaters"


def model_in(folder):
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{}")


def test_a_run_may_store_its_policy_where_nothing_is_or_where_it_stored_it(cache, tmp_path):
    check_run_debater("r", tmp_path / "results", "embedded")  # free
    model_in(cache / "r")
    record_run_debater("r", tmp_path / "results")
    assert debater_owner("r").kind == "run"
    check_run_debater("r", tmp_path / "results", "embedded")  # the same run again (a resume)
    check_run_debater("r", str(tmp_path / "results") + "/", "embedded")  # the same folder spelled otherwise
    with pytest.raises(ConfigError, match=r"training run 'r' \(results .*results\).*another --run"):
        check_run_debater("r", tmp_path / "elsewhere", "embedded")


def test_a_run_may_not_replace_a_warm_start_or_a_model_with_no_record(cache, tmp_path):
    model_in(cache / "ws")
    (cache / "ws" / "debater.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ConfigError, match=r"run name 'ws'.*a warm-started debater.*debate cache rm debater:ws"):
        check_run_debater("ws", tmp_path / "results", "embedded")
    model_in(cache / "old")  # a run's policy stored before runs recorded it
    assert debater_owner("old").kind == "unknown"
    with pytest.raises(ConfigError, match="no record of what made it"):
        check_run_debater("old", tmp_path / "results", "embedded")


def test_a_warm_start_is_never_read_from_a_runs_policy(cache, tmp_path):
    check_warm_start_folder("new")  # free: it will be trained
    model_in(cache / "ws")
    (cache / "ws" / "debater.json").write_text(json.dumps({"config": {}}))
    check_warm_start_folder("ws")
    model_in(cache / "r")
    record_run_debater("r", tmp_path / "results")
    with pytest.raises(ConfigError, match=r"warm_start.name 'r'.*training run 'r'.*not a warm start"):
        check_warm_start_folder("r")


def test_ensure_warm_start_refuses_a_runs_policy_before_loading_anything(cache, tmp_path):
    from debate.training.config import TrainConfig, WarmStartConfig
    from debate.training.warm_start import ensure_warm_start

    model_in(cache / "r")
    record_run_debater("r", tmp_path / "results")
    with pytest.raises(ConfigError, match="not a warm start"):
        ensure_warm_start(TrainConfig(warm_start=WarmStartConfig(name="r")), progress=False)
