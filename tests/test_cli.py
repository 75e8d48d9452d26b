"""The command line: every verb has --help; bad input is a clear error with exit code 2."""

from __future__ import annotations

import pytest

from ui.cli import build_parser, main


@pytest.mark.parametrize("verb", ["tournament", "report", "export", "bench", "train"])
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([verb, "--help"])
    assert exc.value.code == 0
    assert "usage: debate " + verb in capsys.readouterr().out



def test_train_help_names_every_training_preset(capsys):
    from debate.training.config import preset_names

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "cpu-wide" in preset_names() and f"a built-in preset ({', '.join(preset_names())})" in out

def test_unknown_preset_lists_known_ones(capsys):
    assert main(["tournament", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "smoke" in err


def test_bad_override_names_the_field(capsys, tmp_path):
    assert main(["tournament", "--results", str(tmp_path), "--set", "entries.0.temprature=1"]) == 2
    err = capsys.readouterr().err
    assert "temprature" in err and "temperature" in err


def test_missing_config_file(capsys, tmp_path):
    assert main(["tournament", "--config", str(tmp_path / "no.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_of_unknown_run(capsys, tmp_path):
    from debate.store import Store

    Store(tmp_path)
    assert main(["report", "nope", "--results", str(tmp_path)]) == 2
    assert "no run named 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["report", "export"])
def test_read_verbs_on_a_missing_results_folder_create_nothing(verb, capsys, tmp_path):
    missing = tmp_path / "nowhere"
    assert main([verb, "r", "--results", str(missing)]) == 2
    assert f"no results database at {missing / 'debate.sqlite'}" in capsys.readouterr().err
    assert not missing.exists()


def test_resume_of_unknown_run(capsys, tmp_path):
    assert main(["tournament", "--resume", "nope", "--results", str(tmp_path)]) == 2
    assert "no run named 'nope'" in capsys.readouterr().err


def test_no_train_refuses_a_missing_trained_judge_before_storing_anything(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    assert main(["tournament", "--no-train", "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "--no-train" in err and "debate judge train --preset embedded" in err
    assert not (tmp_path / "results" / "debate.sqlite").exists()


@pytest.mark.parametrize("argv, message", [
    (["export", "nope"], "no results database"),
    (["judge", "eval", "nope"], "no trained judge"),
    (["judge", "train", "--preset", "nope"], "unknown judge preset 'nope'"),
    (["judge", "train", "--set", "epochs=abc"], "epochs: input should be a valid integer"),
    (["judge", "train", "--set", "lr=3e-5", "--set", "epochs=0"], "epochs and batch_debates must be at least 1"),
    (["import", "nyu", "/nonexistent"], "does not exist"),
    (["bench", "engine", "--batch", "x"], "--batch 'x'"),
    (["tournament", "--no-train", "--set", "questions.difficulty=hardest"], "unknown difficulty 'hardest'"),
    (["tournament", "--no-train", "--set", "protocols.7.rounds=2"], "does not name a field"),
])
def test_user_mistakes_are_errors_not_tracebacks(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_a_question_file_that_is_not_utf8_names_the_byte(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "q.jsonl"
    good = '{"id": "q1", "question": "Who?", "answers": ["a", "b"], "correct": 0}\n'
    path.write_bytes(good.encode() + '{"id": "q2", "question": "Caf\u00e9?", "answers": ["a", "b"], "correct": 1}\n'.encode("latin-1"))
    argv = ["tournament", "--no-train", "--results", str(tmp_path), "--set", "questions.source=jsonl", "--set", f"questions.path={path}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    offset = len(good.encode()) + len('{"id": "q2", "question": "Caf')
    assert f"{path} line 2 (byte offset {offset})" in err and "UTF-8" in err, err


@pytest.mark.parametrize("override, says", [
    ("objective=grpo", "objective: unknown value 'grpo'; known: dpo, ipo, kto, reinforce, ppo"),
    ("beta=0", "beta: input should be greater than 0"),
    ("missing_eos_penalty=-0.5", "missing_eos_penalty: input should be greater than or equal to 0"),
    ("heldout_questions.seed=401", "heldout_questions.seed: must differ from train_questions.seed"),
    ("reward_model.seed=400", "must differ from warm_start.seed, warm_start.probe_seed and reward_model.seed"),
    ("samples=1", "samples: objective dpo pairs the best and worst"),
])
def test_train_config_mistakes_are_named_before_any_model_loads(override, says, capsys, tmp_path):
    assert main(["train", "--results", str(tmp_path), "--set", override]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
    assert not (tmp_path / "debate.sqlite").exists()  # nothing stored


def test_train_resume_of_unknown_run_and_of_a_tournament(capsys, tmp_path):
    from debate.records import RunInfo
    from debate.store import Store

    assert main(["train", "--resume", "nope", "--results", str(tmp_path)]) == 2
    assert "no run named 'nope'" in capsys.readouterr().err
    Store(tmp_path).add_run(RunInfo("t", "tournament", "name: t\n", 0.0))
    assert main(["train", "--resume", "t", "--results", str(tmp_path)]) == 2
    assert "run t is a tournament run, not a training run" in capsys.readouterr().err


def test_train_run_named_like_the_warm_start_is_refused(capsys, tmp_path):
    assert main(["train", "--results", str(tmp_path), "--run", "embedded"]) == 2
    assert "is the warm start's name" in capsys.readouterr().err
