"""The self-play loop end to end on the tiny random model with scripted judges: iterations recorded and
checkpointed, held-out questions never trained on, resume after a kill -9 loses and repeats nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from debate.configs import ConfigError, PolicyConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(results: Path, **over):
    from debate.training.config import TrainConfig, SplitConfig

    fields = dict(name="t", iterations=2, samples=2, train_questions=SplitConfig(n=3, seed=401),
                  heldout_questions=SplitConfig(n=2, seed=402), max_new_tokens=12, word_limit=30, lr=5e-3, batch=4,
                  use_ray=False, results=str(results), device="cpu")
    fields.update(over)
    return TrainConfig(**fields)


def letters_from_length(messages):
    """A scripted judge that prefers the answer whose speech is longer: verdicts vary with the speeches."""
    text = messages[-1][1]
    a = text.count("A:") + len(text.split("A:")[-1]) % 7
    b = text.count("B:") + len(text.split("B:")[-1]) % 5
    p = (1 + a) / (2 + a + b)
    return p, 1 - p


def handles(cfg, tiny_dir):
    from debate.actors import LearnerHandle
    from debate.backends.mock import mock_policy
    from debate.training.server import LearnerServer

    server = LearnerServer(PolicyConfig("current", model=str(tiny_dir), device="cpu", dtype="float32"), cfg)
    judges = [mock_policy("rm", letters=letters_from_length), mock_policy("heldout")]
    return LearnerHandle(server=server), judges


def test_loop_records_iterations_and_keeps_splits_apart(tmp_path, tiny_model_dir, tiny_policy, monkeypatch):
    from arenas.selfplay import run_training, split_questions
    from arenas.train_report import format_train_report, plot_training

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg(tmp_path / "results", missing_eos_penalty=0.5)
    learner, judges = handles(cfg, tiny_model_dir)
    result = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges)
    assert [r["iteration"] for r in result.rows] == [0, 1, 2]
    for r in result.rows[1:]:
        assert r["samples"] + r["dropped"] == 3 * 2 * 2, r  # questions x samples x two speeches
        assert "judge_accuracy" in r and "heldout_accuracy_n" in r and r["kl"] == r["kl"]
        assert r["evidence_comparisons"] >= 0 and "evidence_agreement" in r  # the random model rarely quotes
        assert 0 <= r["kl_median"] <= r["kl_max"] and r["kl"] <= r["kl_max"]
        assert r["rollout_supporting_n"] == 3 * 2 and r["rollout_invented_n"] == 3 * 2  # one honest speech a debate
        # the random model seldom ends within 12 tokens: its cut speeches are penalized, and counted
        assert r["rollout_cut_n"] == 3 * 2 * 2 and 0 < r["penalized_cut"] <= r["samples"]
        games = r["judge_accuracy_n"] + r["judge_accuracy_failed"]  # the self games: 2 questions, both seatings
        assert games == 4 and r["eval_reward_n"] == r["judge_accuracy_n"] and r["mean_words_n"] == 2 * games
        assert r["honest_win_rate_low"] == r["judge_accuracy_low"] and r["kl_high"] >= r["kl"] >= r["kl_low"] >= 0
        assert r["pairs_honest"] + r["pairs_dishonest"] == r["units"]  # DPO's pairs, each side's counted
        assert r["honest_supporting_early_n"] + r["honest_supporting_late_n"] == r["honest_supporting_n"]
    assert result.rows[0]["kl"] == 0.0
    train_q, heldout_q = split_questions(cfg)
    transcripts = result.store.transcripts("r")
    rollout_q = {t.question_id for t in transcripts if "rollout" in t.tags}
    eval_q = {t.question_id for t in transcripts if "self" in t.tags}
    assert rollout_q == {q.id for q in train_q} and eval_q == {q.id for q in heldout_q}
    assert not rollout_q & eval_q
    for it in range(3):
        assert (tmp_path / "results" / "r" / "checkpoints" / f"iteration-{it:04d}").is_dir()
    assert (tmp_path / "cache" / "debaters" / "r" / "model" / "config.json").exists()  # `model: debater:r`
    from debate.cache_owner import debater_owner

    assert debater_owner("r").run == "r" and debater_owner("r").results == str((tmp_path / "results").resolve())
    # the same run name in another results folder would replace that policy: refused before any work
    with pytest.raises(ConfigError, match=r"already holds the final policy of training run 'r'.*cache rm debater:r"):
        run_training(tiny_cfg(tmp_path / "other"), run="r", progress=False, learner=learner, judge_policies=judges)
    assert not (tmp_path / "other" / "r").exists()
    text = format_train_report(result.store, "r")
    assert "judge acc" in text and "held-out judge" in text and "vs start (held-out)" in text
    assert "on the same training questions every iteration" in text and "honest quotes early/late" in text
    assert "paired by question (Student t over the 2 held-out questions' differences): judge acc" in text
    assert "change from iteration 0 to 2 (95% interval of the difference): judge acc" in text
    # the rollouts' speeches share their passage by question, so their change is paired by training question
    assert "training rollouts' honest quotes, iteration 1 -> 2, paired by training question (Student t over 3)" in text
    assert all(r["heldout_versus_win_rate_n"] >= 0 for r in result.rows[1:])
    assert plot_training(result.store, "r", tmp_path / "t.png").stat().st_size > 0
    # another judge re-judges the held-out games afterwards (`debate judge r --judge SPEC --tag self`): the report
    # shows its accuracy per iteration, as counted here from its stored verdicts
    from arenas.rejudge import rejudge
    from debate.backends.mock import mock_policy

    spec = tmp_path / "other.yaml"
    spec.write_text("policy: {name: other, model: embedded}\njudge: {name: other, mode: logprob}\n")
    selfplay = [t for t in transcripts if "self" in t.tags]
    assert rejudge(result.store, "r", str(spec), progress=False, tag="self",
                   policy=mock_policy("other", letters=letters_from_length)) == len(selfplay) < len(transcripts)
    questions, verdicts = result.store.questions("r"), {v.transcript_id: v for v in result.store.verdicts("r")
                                                        if v.judge == "other"}
    assert set(verdicts) == {t.id for t in selfplay}  # the rollouts were left alone
    line = [x for x in format_train_report(result.store, "r").splitlines() if x.startswith("judge other")][0]
    for it in range(3):
        right = [verdicts[t.id].p_correct(questions[t.question_id].correct) > 0.5 for t in selfplay
                 if f"iteration-{it}" in t.tags and verdicts[t.id].p_answer0 is not None]
        assert f"{it}: {sum(right) / len(right):.2f} [" in line
    assert "change 0 -> 2 paired by question" in line
    # the trained debater plays a tournament as `model: debater:r` and gets a rating against the base
    from debate.actors import LocalPolicy, PolicyServer
    from debate.configs import load_tournament
    from arenas.report import build_report
    from arenas.tournament import run_tournament
    from tests.conftest import tiny_config

    data = tiny_config(tiny_model_dir, tmp_path / "tournament", n=2, protocols=[{"name": "simultaneous", "rounds": 1}])
    data["policies"].append({"name": "trained", "model": "debater:r", "device": "cpu"})
    data["entries"] = [data["entries"][0], {"name": "trained", "policy": "trained", "temperature": 0.0,
                                            "max_new_tokens": 12}]
    trained = LocalPolicy(PolicyServer(load_tournament(data).policy("trained")))
    played = run_tournament(load_tournament(data), run="vs-base", progress=False,
                            policies={"p": tiny_policy, "trained": trained, "j": tiny_policy})
    board = build_report(played.store, "vs-base").leaderboard
    overall = board[board["scope"] == "overall"]
    assert set(overall["player"]) == {"cold", "trained"} and (overall["games"] > 0).all()


def test_overlapping_splits_and_bad_objective_are_config_errors(tmp_path):
    from arenas.selfplay import split_questions
    from debate.training.config import SplitConfig

    with pytest.raises(ConfigError, match="heldout_questions.seed"):
        tiny_cfg(tmp_path, heldout_questions=SplitConfig(n=2, seed=401))
    with pytest.raises(ConfigError, match="known: dpo, ipo, kto, reinforce, ppo"):
        tiny_cfg(tmp_path, objective="grpo")
    with pytest.raises(ConfigError, match="beta"):
        tiny_cfg(tmp_path, beta=-1)
    with pytest.raises(ConfigError, match="beta"):
        tiny_cfg(tmp_path, beta=11)
    assert split_questions(tiny_cfg(tmp_path))  # disjoint seeds: fine
    for objective in ("reinforce", "ppo"):  # on-policy: sampled from the policy itself or refused
        with pytest.raises(ConfigError, match=r"temperature and top_p: objective .* set temperature: 1 and top_p: 1"):
            tiny_cfg(tmp_path, objective=objective, temperature=0.7)
        with pytest.raises(ConfigError, match="top_p 0.9"):
            tiny_cfg(tmp_path, objective=objective, top_p=0.9)
    assert tiny_cfg(tmp_path, objective="dpo", temperature=0.7).temperature == 0.7


def test_held_out_passages_are_none_the_warm_start_or_reward_model_learns_from(tmp_path, monkeypatch):
    import arenas.selfplay as selfplay
    from debate.training.config import preset_names, train_config

    for name in preset_names():  # the presets' real sets
        cfg = train_config(None, name)
        stages = selfplay.trained_on(cfg)
        assert len(stages["warm_start"]) == cfg.warm_start.questions
        assert len(stages["reward_model"]) == (cfg.reward_model.templated_questions + cfg.reward_model.policy_questions
                                               + cfg.reward_model.val_questions)
        heldout = selfplay.split_questions(cfg)[1]
        assert not {q.passage for q in heldout} & {q.passage for qs in stages.values() for q in qs}
    cfg = tiny_cfg(tmp_path)
    heldout = selfplay.split_questions(cfg)[1]
    monkeypatch.setattr(selfplay, "trained_on", lambda c: {"warm_start": [], "reward_model": heldout[:1]})
    with pytest.raises(ConfigError, match="1 of their passages are among the reward_model questions"):
        selfplay.split_questions(cfg)


def test_the_held_out_judge_can_read_the_passage_and_one_side_can_train(tmp_path, tiny_model_dir, monkeypatch):
    """`heldout_reads_passage`: the held-out judge sees the passage (as in the expert protocol), the reward model
    never does. `train_sides: honest`: the update trains on the honest side's pairs only."""
    from arenas.selfplay import run_training, split_questions
    from debate.backends.mock import mock_policy

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg(tmp_path / "results", iterations=1, heldout_reads_passage=True, train_sides="honest")
    learner, _ = handles(cfg, tiny_model_dir)
    seen: dict[str, list[str]] = {"rm": [], "heldout": []}

    def recording(name):
        def letters(messages):
            seen[name].append(" ".join(text for _, text in messages))
            return letters_from_length(messages)
        return letters

    judges = [mock_policy("rm", letters=recording("rm")), mock_policy("heldout", letters=recording("heldout"))]
    row = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges).rows[-1]
    assert row["units"] == row["pairs_honest"] > 0 and row["pairs_dishonest"] > 0  # pairs of both, one trained
    train_q, heldout_q = split_questions(cfg)
    passages = [q.passage[:60] for q in heldout_q + train_q]
    assert seen["heldout"] and all(any(p in m for p in passages) for m in seen["heldout"])
    assert seen["rm"] and not any(p in m for p in passages for m in seen["rm"])


def test_fresh_questions_give_each_iteration_new_passages(tmp_path, tiny_model_dir, monkeypatch):
    """`fresh_questions`: each iteration's rollouts are on its own block of train_questions.n questions, none of
    them held out, and a resume with more iterations keeps the earlier blocks."""
    from arenas.selfplay import run_training, split_questions

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg(tmp_path / "results", fresh_questions=True)
    learner, judges = handles(cfg, tiny_model_dir)
    result = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges)
    train_q, heldout_q = split_questions(cfg)
    assert len(train_q) == 2 * 3
    assert split_questions(tiny_cfg(tmp_path, fresh_questions=True, iterations=3))[0][:6] == train_q
    by_it = {it: {t.question_id for t in result.store.transcripts("r") if {"rollout", f"iteration-{it}"} <= set(t.tags)}
             for it in (1, 2)}
    assert by_it[1] == {q.id for q in train_q[:3]} and by_it[2] == {q.id for q in train_q[3:]}
    assert len({q.passage for q in train_q}) == 6 and not {q.passage for q in train_q} & {q.passage for q in heldout_q}
    assert all(r["rollout_supporting_n"] == 3 * 2 for r in result.rows[1:])
    from arenas.train_report import format_train_report

    text = format_train_report(result.store, "r")
    assert "on 3 questions new to the policy each iteration" in text
    assert "iteration 1 -> 2: fewer than two training questions in both (fresh_questions" in text


def test_iteration_without_pairs_is_recorded_and_skipped(tmp_path, tiny_model_dir, monkeypatch):
    """Every verdict failed (a verdict of exactly 0.5, the judge indifferent, is a failed one too: judges.base):
    the iteration is recorded with why its update was skipped, and the weights stay as they were."""
    from arenas.selfplay import run_training

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg(tmp_path / "results", iterations=1)
    learner, _ = handles(cfg, tiny_model_dir)
    from debate.backends.mock import mock_policy

    silent = mock_policy("rm", letters=lambda m: (0.0, 0.0))  # every verdict fails: no reward at all
    result = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=[silent, mock_policy("h")])
    row = result.rows[-1]
    assert row["units"] == 0 and "no usable" in row["skipped"] and row["verdicts_failed"] == 3 * 2
    assert learner.call("version") == 0



def test_verifiable_reward_in_the_loop_follows_the_ground_truth_not_the_judge(tmp_path, tiny_model_dir, monkeypatch):
    """`reward: verifiable` rewards a game's speeches by whether the honest side's quote holds the deciding fact,
    so it trains with a training judge whose every verdict fails. The random model never quotes, so every game
    fails the check and every group ties (no pairs); with a double that passes every other game, IPO trains."""
    import debate.training.quote_stats as quote_stats
    from arenas.selfplay import run_training
    from debate.backends.mock import mock_policy

    silent = lambda: mock_policy("rm", letters=lambda m: (0.0, 0.0))  # noqa: E731

    def run(name):
        monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / f"{name}-cache"))  # each run stores its debater as debater:r
        cfg = tiny_cfg(tmp_path / name, iterations=1, reward="verifiable", objective="ipo")
        learner, _ = handles(cfg, tiny_model_dir)
        return run_training(cfg, run="r", progress=False, learner=learner, judge_policies=[silent(), mock_policy("h")])

    none = run("none")
    row = none.rows[-1]
    assert row["verdicts_failed"] == 3 * 2 and row["samples"] == 3 * 2 * 2  # every speech rewarded, no verdict used
    assert row["units"] == 0 and "no usable" in row["skipped"]
    real = quote_stats.supporting_by_transcript
    from arenas.selfplay import split_questions

    questions = {q.id: q for q in split_questions(tiny_cfg(tmp_path))[0]}
    rollouts = [t for t in none.store.transcripts("r") if "rollout" in t.tags]
    assert len(rollouts) == 3 * 2 and not any(real(rollouts, questions).values())

    def every_other(games, questions):
        return {t: i % 2 == 0 for i, t in enumerate(sorted(real(games, questions)))}

    monkeypatch.setattr(quote_stats, "supporting_by_transcript", every_other)
    row = run("half").rows[-1]
    assert row["verdicts_failed"] == 3 * 2 and row["units"] > 0 and row["loss"] == row["loss"]
    assert not row.get("skipped")


def test_a_judge_with_another_tokenizer_reads_the_speeches_as_text(tmp_path, tiny_model_dir, monkeypatch):
    """Judges and debaters exchange text, never token ids, so a reward model whose tokenizer differs from the
    debater's (another vocabulary here) judges the rollouts, and its verdicts train the policy."""
    from arenas.selfplay import run_training
    from debate.actors import LocalPolicy, PolicyServer
    from debate.backends.mock import mock_policy
    from tests.conftest import build_tiny_model

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    corpus = ("Answer: A", "Answer: B", " A B A B", "Judge: which answer holds?", "Evidence in quote tags.")
    other = build_tiny_model(tmp_path / "other", corpus=corpus, vocab=300)
    rm = LocalPolicy(PolicyServer(PolicyConfig("rm", model=str(other), device="cpu", dtype="float32")))
    from transformers import AutoTokenizer

    theirs, ours = rm.server.backend.tokenizer, AutoTokenizer.from_pretrained(tiny_model_dir)
    speech = "The red lantern."
    assert len(theirs) != len(ours) and theirs(speech)["input_ids"] != ours(speech)["input_ids"]
    cfg = tiny_cfg(tmp_path / "results", iterations=1)
    learner, _ = handles(cfg, tiny_model_dir)
    row = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=[rm, mock_policy("h")]).rows[-1]
    assert row["verdicts_failed"] == 0 and row["judge_accuracy_n"] == 4  # every verdict usable
    assert row["units"] > 0 and row["loss"] == row["loss"]  # its rewards made pairs, and the update ran

SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.test_selfplay import tiny_cfg, handles
from arenas.selfplay import run_training
cfg = tiny_cfg(Path({results!r}), iterations=3)
learner, judges = handles(cfg, Path({tiny!r}))
generate, generated = learner.server.generate, [0]
def counting(requests, reference=False):  # every speech this process asks the policy for
    generated[0] += len(requests)
    return generate(requests, reference)
learner.server.generate = counting
run_training(cfg, run="r", resume={resume}, progress=False, learner=learner, judge_policies=judges)
(Path({results!r}) / "generated.txt").write_text(str(generated[0]))
judged = sum(len(call) for j in judges for call in j.backend.score_calls)  # every prompt this process judged
(Path({results!r}) / "judged.txt").write_text(str(judged))
"""


def _speech_rows(db: Path) -> dict[tuple[str, int], tuple[str, float]]:
    """Every stored speech: (transcript, index) -> (its JSON, when it was stored)."""
    import sqlite3

    with sqlite3.connect(db, timeout=30) as c:
        return {(t, i): (j, at) for t, i, j, at in c.execute("SELECT transcript_id, idx, json, created FROM speeches")}


def _run(tmp_path, tiny_dir, results, resume):
    # a cache per results folder: the two runs share the name r, and each stores its policy as debater:r
    env = {**os.environ, "DEBATE_CACHE": str(Path(results).with_name(Path(results).name + "-cache"))}
    code = SCRIPT.format(root=str(ROOT), results=str(results), tiny=str(tiny_dir), resume=resume)
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)


@pytest.mark.slow
def test_kill_9_mid_iteration_then_resume_loses_and_repeats_nothing(tmp_path, tiny_model_dir):
    import sqlite3

    from debate.store import Store, StoreError
    from debate.training.iterations import iteration_rows

    whole = tmp_path / "whole"
    assert _run(tmp_path, tiny_model_dir, whole, False).wait(timeout=600) == 0
    killed = tmp_path / "killed"
    proc = _run(tmp_path, tiny_model_dir, killed, False)
    deadline = time.time() + 600
    # kill once iteration 1 is recorded and iteration 2's rollouts have started to be stored
    while time.time() < deadline and proc.poll() is None:
        if (killed / "debate.sqlite").exists():
            try:
                store = Store(killed, read_only=True)
                rows = iteration_rows(store, "r")
                started = [t for t in store.transcripts("r") if "iteration-2" in t.tags and t.speeches]
            except (sqlite3.Error, StoreError):  # the database exists before its tables do
                rows, started = [], []
            if rows and rows[-1]["iteration"] >= 1 and started:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed mid-iteration"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored_before = _speech_rows(killed / "debate.sqlite")
    verdicts_before = len(Store(killed, read_only=True).verdicts("r"))
    assert _run(tmp_path, tiny_model_dir, killed, True).wait(timeout=600) == 0
    stored_after = _speech_rows(killed / "debate.sqlite")
    assert all(stored_after[k] == v for k, v in stored_before.items())  # no stored speech rewritten
    whole_speeches = _speech_rows(whole / "debate.sqlite")
    assert int((whole / "generated.txt").read_text()) == len(whole_speeches)  # every generated speech is stored
    # the resumed run generated exactly the speeches missing at the kill (stored ones are ignored on insert, so
    # only a count shows that none was generated again)
    assert int((killed / "generated.txt").read_text()) == len(stored_after) - len(stored_before) > 0
    assert len(stored_after) == len(whole_speeches)
    a, b = Store(whole, read_only=True), Store(killed, read_only=True)
    rows_a, rows_b = iteration_rows(a, "r"), iteration_rows(b, "r")
    assert [r["iteration"] for r in rows_b] == [0, 1, 2, 3]
    keys = ("judge_accuracy", "heldout_accuracy", "loss", "units", "samples", "mean_words")
    assert [{k: r.get(k) for k in keys} for r in rows_a] == [{k: r.get(k) for k in keys} for r in rows_b]
    ta, tb = a.transcripts("r"), b.transcripts("r")
    assert sorted(t.id for t in ta) == sorted(t.id for t in tb)
    assert [t.speeches for t in ta] == [t.speeches for t in tb]  # same text: nothing replayed differently
    counts = Counter((v.transcript_id, v.judge) for v in b.verdicts("r"))
    assert max(counts.values()) == 1
    # nor judged again: verdicts are ignored on insert too, so count the judges' prompts (two presentation
    # orders a verdict); the resumed run judged exactly the verdicts missing at the kill
    per_verdict = int((whole / "judged.txt").read_text()) / len(a.verdicts("r"))
    assert per_verdict == 2
    assert int((killed / "judged.txt").read_text()) == per_verdict * (len(b.verdicts("r")) - verdicts_before) > 0


RAY_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.test_selfplay import tiny_cfg
from arenas.selfplay import run_training, start_actors
cfg = tiny_cfg(Path({results!r}), iterations=1, use_ray=True, heldout_judge="judge:held")
learner, judges = start_actors(cfg, Path({tiny!r}))
row = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges).rows[-1]
import json
print("ROW " + json.dumps(dict(actor=learner.actor is not None, judges=[j.__class__.__name__ for j in judges],
                               learner_version=learner.call("version"), **row)))
"""


@pytest.mark.slow
def test_the_loop_runs_in_ray_actors(tmp_path, tiny_model_dir):
    """`start_actors` as `debate train` calls it: the learner in a Ray actor that also generates (the shared
    layout) and the two judges (`judge:NAME` from the cache) in actors of their own; one iteration updates the
    weights the actor generates with."""
    cache = tmp_path / "cache"
    for name in ("rm-embedded", "held"):  # the default reward model's name and the held-out judge
        (cache / "judges" / name).mkdir(parents=True)
        (cache / "judges" / name / "model").symlink_to(tiny_model_dir)
    env = {**os.environ, "DEBATE_CACHE": str(cache), "RAY_USAGE_STATS_ENABLED": "0"}
    code = RAY_SCRIPT.format(root=str(ROOT), results=str(tmp_path / "results"), tiny=str(tiny_model_dir))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    row = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("ROW "))[4:])
    assert row["actor"] and row["judges"] == ["RemotePolicy", "RemotePolicy"], row
    assert row["units"] > 0 and row["verdicts_failed"] == 0 and row["learner_version"] == 1, row  # updated in the actor
    assert row["judge_accuracy_n"] + row["judge_accuracy_failed"] == 4 == row["heldout_accuracy_n"], row


def test_offline_update_from_a_tournaments_verdicts_and_from_peoples(tmp_path, tiny_model_dir, tiny_policy, monkeypatch):
    from dataclasses import replace

    from arenas.selfplay_offline import offline_update
    from arenas.tournament import run_tournament
    from debate.configs import load_tournament
    from debate.training.iterations import iteration_rows
    from tests.conftest import tiny_config

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "results"
    t_cfg = load_tournament(tiny_config(tiny_model_dir, results, n=2, samples=2))
    played = run_tournament(t_cfg, run="t", progress=False, policies={"p": tiny_policy, "j": tiny_policy})
    cfg = tiny_cfg(results, objective="kto")
    learner, _ = handles(cfg, tiny_model_dir)
    before = {k: v.clone() for k, v in learner.server.learner.model.named_parameters() if v.requires_grad}
    line = offline_update(cfg, "t", run="off", learner=learner, progress=False)
    row = iteration_rows(played.store, "off")[0]
    assert row["source_run"] == "t" and row["units"] > 0 and "loss" in row, row
    assert "debater:off" in line
    after = dict(learner.server.learner.model.named_parameters())
    assert any(not (after[k] == v).all() for k, v in before.items())  # the adapter moved
    # people's verdicts as the reward: judged through the browser's queue (one debate of a story per person), then
    # chosen with --judge human
    from judges.human_queue import HUMAN_JUDGE, HumanQueue

    queue = HumanQueue(played.store)
    games = [t for t in played.store.transcripts("t") if t.status == "complete" and t.protocol == "debate"]
    assert queue.enqueue("t", games) == len(games) > 0
    given = 0
    for person in (f"person{i}" for i in range(len(games))):
        queue.add_judge(person)
        while (slot := queue.take(person)) is not None:
            queue.submit(slot.id, person, slot.lease, 0.8 if given % 2 else 0.3, "The first debater quoted the story.")
            given += 1
    assert given == len(games)
    line = offline_update(cfg, "t", judge=HUMAN_JUDGE, run="off-people", learner=learner, progress=False)
    row = iteration_rows(played.store, "off-people")[0]
    assert row["judge"] == HUMAN_JUDGE and row["units"] > 0, row
    assert row["samples"] == sum(len(t.speeches) for t in games)  # every speech of every judged debate
    with pytest.raises(ConfigError, match="no usable verdict from judge 'bob'"):
        offline_update(cfg, "t", judge="bob", run="off-bob", learner=learner, progress=False)
    for reward in ("turn", "verifiable"):  # rewards that need live rollouts are refused, not silently replaced
        with pytest.raises(ConfigError, match=f"reward: {reward} with --from-run"):
            offline_update(replace(cfg, reward=reward), "t", run=f"off-{reward}", learner=learner, progress=False)


def _row(**rates) -> dict:
    """An iteration's metrics with each named rate's value and its 95% Wilson interval over 32 games."""
    from arenas.metrics import rate

    out: dict = {"mean_words": 20.0}
    for key, k in rates.items():
        r = rate(k, 32)
        out.update({key: r.value, f"{key}_low": r.low, f"{key}_high": r.high})
    return out


def test_hacking_signs_need_intervals_that_do_not_overlap():
    from arenas.selfplay_eval import hacking_signs

    steady = _row(judge_accuracy=16, heldout_accuracy=16, honest_supporting=18, dishonest_invented=6)
    assert hacking_signs([steady, _row(judge_accuracy=19, heldout_accuracy=15, honest_supporting=11,
                                       dishonest_invented=8)]) == []  # long2's drift: every interval overlaps
    persuaded = _row(judge_accuracy=28, heldout_accuracy=17, honest_supporting=18, dishonest_invented=6)
    (sign,) = hacking_signs([steady, persuaded])
    assert "possible reward hacking" in sign
    informed = _row(judge_accuracy=28, heldout_accuracy=28, honest_supporting=18, dishonest_invented=6)
    assert hacking_signs([steady, informed]) == []  # both judges rose: the debates got more informative


def test_hacking_signs_name_lost_evidence_and_invented_quotes():
    from arenas.selfplay_eval import hacking_signs

    start = _row(judge_accuracy=16, heldout_accuracy=16, honest_supporting=28, dishonest_invented=2)
    (sign,) = hacking_signs([start, _row(judge_accuracy=16, heldout_accuracy=16, honest_supporting=8, dishonest_invented=2)])
    assert "supporting-quote rate fell" in sign
    (sign,) = hacking_signs([start, _row(judge_accuracy=16, heldout_accuracy=16, honest_supporting=28, dishonest_invented=20)])
    assert "invented-quote rate rose" in sign
    longer = dict(start, mean_words=31.0)
    (sign,) = hacking_signs([start, longer])
    assert "speeches grew" in sign


def test_versus_win_rate_by_each_judge():
    from debate.records import Seat, Transcript, Verdict
    from arenas.selfplay_eval import versus_win_rate, verdict_map

    def game(n: int, current_side: int) -> Transcript:
        seats = (Seat("debater_a", "current", current_side), Seat("debater_b", "start", 1 - current_side))
        return Transcript(f"g{n}", "r", "versus-1", f"q{n}", "simultaneous", seats, status="complete", tags=("versus",))

    games = [game(0, 0), game(1, 1), game(2, 0), game(3, 1)]
    p0 = {"rm": [0.9, 0.2, 0.7, None], "held": [0.4, 0.6, 0.8, 0.1]}  # p(answer 0); None: a failed verdict
    verdicts = [Verdict(f"{j}{n}", "r", f"g{n}", f"q{n}", j, p) for j, ps in p0.items() for n, p in enumerate(ps)]
    rm = versus_win_rate(games, verdict_map(verdicts, "rm"))
    assert (rm["versus_win_rate"], rm["versus_win_rate_n"]) == (1.0, 3)  # the failed verdict left out
    held = versus_win_rate(games, verdict_map(verdicts, "held"), "heldout_versus_win_rate")
    assert (held["heldout_versus_win_rate"], held["heldout_versus_win_rate_n"]) == (0.5, 4)  # g2 and g3 won


def test_hacking_signs_name_a_win_over_the_start_only_the_training_judge_sees():
    from arenas.selfplay_eval import hacking_signs

    start = _row(judge_accuracy=16, heldout_accuracy=16)
    (sign,) = hacking_signs([start, dict(start, **_row(versus_win_rate=26, heldout_versus_win_rate=17))])
    assert "not by the held-out judge" in sign
    assert hacking_signs([start, dict(start, **_row(versus_win_rate=26, heldout_versus_win_rate=26))]) == []
    assert hacking_signs([start, dict(start, **_row(versus_win_rate=20, heldout_versus_win_rate=10))]) == []


def test_difference_interval_matches_newcombe_1998():
    from debate.intervals import difference_interval

    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score, no correction)
    for (k1, n1, k2, n2), (low, high) in {(48, 80, 56, 70): (0.0524, 0.3339), (3, 10, 9, 10): (0.1705, 0.8090)}.items():
        d, lo, hi = difference_interval(k1, n1, k2, n2)
        assert d == pytest.approx(k2 / n2 - k1 / n1) and (round(lo, 4), round(hi, 4)) == (low, high)
    assert all(x != x for x in difference_interval(0, 0, 3, 4))  # no games: nan, never a number


def test_mean_interval_matches_students_t():
    from debate.intervals import mean_interval, t_quantile

    # the 0.975 quantiles of Student's t (any table): the expansion within 0.004 at 3 degrees of freedom, 0.001 from 4
    for df, exact in {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 9: 2.2622, 31: 2.0395, 100: 1.9840}.items():
        assert t_quantile(df) == pytest.approx(exact, abs=0.004 if df == 3 else 0.001)
    mean, low, high = mean_interval([1, 2, 3, 4, 5])  # sd sqrt(2.5), standard error sqrt(0.5)
    assert mean == 3 and (low, high) == pytest.approx((3 - 2.7764 * 0.5**0.5, 3 + 2.7764 * 0.5**0.5), abs=1e-3)
    assert mean_interval([7.0])[0] == 7.0 and all(x != x for x in mean_interval([7.0])[1:])  # no spread: no interval
    assert all(x != x for x in mean_interval([]))
    with pytest.raises(ValueError):
        t_quantile(0)


def test_held_out_reward_and_length_carry_intervals():
    from debate.records import Seat, Speech, Transcript, Verdict
    from debate.synthetic import generate
    from arenas.selfplay_eval import honest_reward, quoting, rollout_quoting, verdict_map

    qs = {q.id: q for q in generate(3, 402, "easy", "heldout")}
    seats = (Seat("debater_a", "current", 0), Seat("debater_b", "current", 1))
    games = [Transcript(f"g{i}", "r", "self-1", q_id, "simultaneous", seats, status="complete", tags=("self",),
                        speeches=(Speech(f"g{i}", 0, 0, "debater_a", 0, "current", " ".join(["w"] * (10 + i))),
                                  Speech(f"g{i}", 1, 0, "debater_b", 1, "current", " ".join(["w"] * 20),
                                         truncated=i == 0)))
             for i, q_id in enumerate(qs)]
    p0 = [0.9, 0.4, None]  # the third verdict failed: left out of the reward
    verdicts = verdict_map([Verdict(f"v{i}", "r", g.id, g.question_id, "rm", p) for i, (g, p) in
                            enumerate(zip(games, p0))], "rm")
    honest = [2 * (p if qs[g.question_id].correct == 0 else 1 - p) - 1 for g, p in zip(games[:2], p0[:2])]
    out = honest_reward(games, verdicts, qs)
    assert out["eval_reward"] == pytest.approx(sum(honest) / 2) and out["eval_reward_n"] == 2
    assert out["eval_reward_low"] < out["eval_reward"] < out["eval_reward_high"]
    words = quoting(games, qs)
    assert words["mean_words"] == pytest.approx((10 + 11 + 12 + 3 * 20) / 6) and words["mean_words_n"] == 6
    assert words["mean_words_low"] < words["mean_words"] < words["mean_words_high"]
    # one speech of six cut off at a limit, in the held-out games and (the same games read as rollouts) there
    assert words["cut_rate"] == pytest.approx(1 / 6) and words["cut_rate_n"] == 6
    assert words["cut_rate_low"] < 1 / 6 < words["cut_rate_high"]
    assert rollout_quoting(games, qs)["rollout_cut"] == pytest.approx(1 / 6)


def test_change_line_reports_each_rate_first_to_last():
    from arenas.train_report import change_line

    first = dict(_row(judge_accuracy=16, heldout_accuracy=16, honest_supporting=16), iteration=0)
    last = dict(_row(judge_accuracy=24, heldout_accuracy=16, honest_supporting=12), iteration=5)
    for r in (first, last):
        r.update({f"{k}_n": 32 for k in ("judge_accuracy", "heldout_accuracy", "honest_supporting")})
    line = change_line(first, last)
    assert line.startswith("change from iteration 0 to 5")
    assert "judge acc +0.25 [+0.01, +0.45]" in line and "held-out judge +0.00 [-0.23, +0.23]" in line
    assert "honest quotes -0.12 [" in line
    assert change_line({"iteration": 0}, {"iteration": 1}).endswith("no rate measured in both")


def test_kl_fields_show_the_spread_behind_the_mean():
    import math

    from arenas.selfplay_eval import kl_fields

    out = kl_fields([0.1, 0.2, 0.3, 9.4])  # one speech drives the mean
    assert out["kl"] == pytest.approx(2.5) and out["kl_median"] == pytest.approx(0.25) and out["kl_max"] == 9.4
    # its Student t interval (3 degrees of freedom: 3.1824; sd 4.601), the lower end held at 0 as each estimate is
    assert out["kl_high"] == pytest.approx(2.5 + 3.1824 * 4.6011 / 2, abs=0.02) and out["kl_low"] == 0.0
    assert kl_fields([]) == {"kl": 0.0, "kl_median": 0.0, "kl_max": 0.0}  # before any update
    assert all(math.isnan(v) for v in kl_fields(None).values())  # not measured


def test_the_report_holds_the_stages_the_run_started_from(tmp_path):
    """The warm start's probe and the reward model's held-out accuracy are stored with the run (read from their
    cache entries when the run starts), so `debate report RUN` shows them after the cache is gone."""
    import json
    import time

    from arenas.selfplay import stages_of
    from arenas.train_report import format_train_report
    from debate.records import RunInfo
    from debate.store import Store
    from debate.training.iterations import record_iteration, record_stages, run_stages

    model = tmp_path / "debaters" / "ws" / "model"
    model.mkdir(parents=True)
    after = {"speeches": 16, "tag_rate": 0.9375, "verified_rate": 0.875, "honest_supporting_rate": 0.625,
             "honest_supporting": 5, "honest": 8}
    before = {**after, "tag_rate": 0.0, "verified_rate": 0.0, "honest_supporting_rate": 0.0}
    (model.parent / "debater.json").write_text(json.dumps(
        {"name": "ws", "demonstrations": 320, "steps": 40, "losses": [2.6, 0.16],
         "probe": {"before": before, "after": after}}))
    acc = lambda a, n, lo, hi: {"accuracy": a, "n": n, "low": lo, "high": hi}  # noqa: E731
    rm = {"name": "rm", "init": "judge:x", "seconds": 439.2, "accuracy": {
        "policy": {"before": acc(0.8125, 32, 0.65, 0.91), "after": acc(0.84375, 32, 0.68, 0.93)},
        "policy_decided": {"after": acc(1.0, 20, 0.84, 1.0)}, "templated": {"after": acc(1.0, 16, 0.81, 1.0)}}}
    stages = stages_of(model, rm)
    assert "losses" not in stages["warm_start"] and "seconds" not in stages["reward_model"]
    store = Store(tmp_path / "results")
    store.add_run(RunInfo(name="r", kind="train", config="name: t\n", created=time.time()))
    record_iteration(store, "r", 0, {"judge_accuracy": 0.75})
    assert run_stages(store, "r") == {}
    record_stages(store, "r", stages)
    record_stages(store, "r", stages)  # a resume records them again
    assert run_stages(store, "r") == stages
    text = format_train_report(store, "r")
    assert ("warm start ws: 320 demonstrations, 40 steps; its probe debates (16 speeches) before -> after: tagged 0.00 "
            "-> 0.94, verified 0.00 -> 0.88, honest supporting 0.00 -> 0.62 (5 of 8)") in text
    assert ("reward model rm on 32 held-out debates of the warm-started debaters: accuracy 0.844 [0.68, 0.93] (its "
            "initial judge: 0.812); on the 20 their quotes decide 1.000, on 16 templated 1.000; target >= 0.8") in text
    from debate.export import tables

    row = tables(store, "r")["stages"].iloc[0]
    assert row["run"] == "r" and row["reward_model.accuracy.policy.after.accuracy"] == 0.84375
    assert row["warm_start.probe.after.honest_supporting"] == 5


def test_a_speech_cut_off_at_a_limit_is_a_sample_that_did_not_end():
    from arenas.selfplay_games import CURRENT, samples_of
    from debate.protocols import get_protocol
    from debate.records import Seat, Speech, Transcript
    from debate.synthetic import generate

    q = generate(1, 5)[0]
    protocol = get_protocol("simultaneous", 1, 32)
    seats = (Seat("debater_a", CURRENT, 0), Seat("debater_b", CURRENT, 1))
    speeches = (Speech("t", 0, 0, "debater_a", 0, CURRENT, "I defend A."),
                Speech("t", 1, 0, "debater_b", 1, CURRENT, "I defend B because the story", truncated=True))
    t = Transcript("t", "r", "m", q.id, protocol.name, seats, status="complete", speeches=speeches)
    samples = samples_of([t], {q.id: q}, protocol, lambda msgs: ["prompt"] * len(msgs))
    assert [(s.completion, s.ended) for s in samples] == [("I defend A.", True), ("I defend B because the story", False)]


def test_a_side_whose_winners_quote_less_is_named():
    import math

    from arenas.selfplay_eval import hacking_signs, quoting_lessons

    rows = [{"pairs_dishonest": 12, "pairs_dishonest_best_tagged": 3, "pairs_dishonest_worst_tagged": 12,
             "pairs_honest": 12, "pairs_honest_best_tagged": 10, "pairs_honest_worst_tagged": 11}]
    (sign,) = quoting_lessons(rows)
    assert sign.startswith("the dishonest side's winning speeches quote") and "(3 of 12 against 12)" in sign
    (sign,) = quoting_lessons(rows, "honest")  # the dishonest pairs were not trained on: said so
    assert "(3 of 12 against 12); train_sides: honest keeps that lesson out of the updates" in sign
    assert "teach the policy" in quoting_lessons(rows, "dishonest")[0]
    rows[0]["pairs_dishonest_best_tagged"] = 9  # 9 against 12 of 12: within the interval
    assert quoting_lessons(rows) == [] and quoting_lessons([{}]) == []
    assert quoting_lessons([{"pairs_honest": math.nan}, *rows]) == []  # iteration 0 in a report's frame: nan
    start = dict(_row(judge_accuracy=16), pairs_honest=0)
    assert any("honest side's winning" in x for x in hacking_signs(
        [start, dict(start, pairs_honest=30, pairs_honest_best_tagged=5, pairs_honest_worst_tagged=20)]))
