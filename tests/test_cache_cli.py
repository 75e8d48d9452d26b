"""`debate cache` lists what the cache holds, what made it and which presets name it; `debate cache rm` removes."""

from __future__ import annotations

import fcntl
import json

import pytest

from ui.cli import main


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("DEBATE_CACHE", str(root))

    def entry(kind: str, name: str, record: str = "", meta: dict | None = None, size: int = 1000):
        folder = root / kind / name
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "model.safetensors").write_bytes(b"x" * size)
        if record:
            (folder / record).write_text(json.dumps(meta or {}))
        return folder

    entry("debaters", "embedded", "debater.json", {"warm_start": {"questions": 40, "seed": 201}, "steps": 10,
                                                   "created": 1.0e9}, size=3_000_000)
    (tmp_path / "results" / "kept").mkdir(parents=True)
    entry("debaters", "kept", "run.json", {"run": "kept", "results": str(tmp_path / "results")})
    entry("debaters", "lost", "run.json", {"run": "lost", "results": str(tmp_path / "gone")})
    entry("debaters", "legacy")
    entry("judges", "rm-embedded", "reward_model.json", {"init": "judge:embedded",
                                                         "debater": str(root / "debaters" / "embedded" / "model")})
    entry("judges", "mine", "judge.json", {"config": {"objective": "ce", "base_model": "embedded", "train_layers": 6}})
    (root / "models" / "smollm2-135m-instruct.tmp123").mkdir(parents=True)  # being converted: not an entry
    (root / "judges" / "mine.tmp").mkdir()  # being trained
    return root


def test_cache_lists_each_entry_with_its_maker_and_the_presets_naming_it(cache, capsys):
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"debater:embedded", "debater:kept", "debater:lost", "debater:legacy",
                          "judge:rm-embedded", "judge:mine"}
    assert out.splitlines()[0].startswith(f"cache {cache}: 6 entries")
    assert "3 MB" in lines["debater:embedded"]
    assert "warm start (40 questions, seed 201, 10 steps)" in lines["debater:embedded"]
    assert "training cpu-smoke" in lines["debater:embedded"] and "training cpu-long" not in lines["debater:embedded"]
    assert "final policy of training run kept" in lines["debater:kept"] and "gone" not in lines["debater:kept"]
    assert "its results folder is gone" in lines["debater:lost"] and "no shipped preset" in lines["debater:lost"]
    assert "no record of what made it" in lines["debater:legacy"]
    assert "judge:embedded fine-tuned on debates of debater:embedded" in lines["judge:rm-embedded"]
    assert "training cpu-smoke" in lines["judge:rm-embedded"]  # cpu-smoke's reward model
    assert "trained judge (ce, base embedded, top 6 layers); named by: no shipped preset" in lines["judge:mine"]


def test_cache_rm_removes_entries_and_refuses_what_it_cannot(cache, capsys):
    assert main(["cache", "rm", "debater:lost", "judge:mine"]) == 0
    assert "removed debater:lost: 0 MB freed" in capsys.readouterr().out
    assert not (cache / "debaters" / "lost").exists() and not (cache / "judges" / "mine").exists()
    assert (cache / "debaters" / "kept").exists()
    assert main(["cache", "rm", "debater:lost"]) == 2
    err = capsys.readouterr().err
    assert "'debater:lost' is not in" in err and "debater:kept" in err  # the entries there are named
    for bad in ("lost", "debaters:kept", "debater:../judges"):
        assert main(["cache", "rm", bad]) == 2
        assert "write KIND:NAME with KIND one of model, judge, debater" in capsys.readouterr().err
    assert main(["cache", "rm"]) == 2 and "needs one or more entries" in capsys.readouterr().err
    with open(cache / "debaters" / "embedded.lock", "w") as held:  # a warm start being made holds this lock
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["cache", "rm", "debater:embedded"]) == 2
        assert "being made by another process" in capsys.readouterr().err
    assert (cache / "debaters" / "embedded" / "model").exists()
    assert main(["cache", "rm", "debater:embedded"]) == 0  # the lock released
    assert "removed debater:embedded: 3 MB freed" in capsys.readouterr().out
    assert not (cache / "debaters" / "embedded").exists() and not (cache / "debaters" / "embedded.lock").exists()
