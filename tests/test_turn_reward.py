"""The process reward (`reward: turn`): branch points and openings, per-point rewards and groups against
hand-computed values, and training runs on the tiny random model with scripted judges: branches stored
as transcripts with verdicts, compared samples differing only in the branched speech, rewards 2p - 1 of
the stored verdicts, failed verdicts skipping their point, and a resume that redoes nothing stored."""

from __future__ import annotations

import hashlib

import pytest

from debate.configs import ConfigError
from debate.protocols import get_protocol
from debate.records import Seat, Speech, Transcript
from debate.training.rewards import (best_worst_pairs, branch_rewards, kto_examples, side_rewards, usable,
                                     with_baselines)
from debate.training.samples import Sample
from tests.test_selfplay import handles, tiny_cfg


def S(key: str, branch: str, tid: str, side: int = 0, q: str = "q1", turn: int = 0) -> Sample:
    return Sample(key, tid, q, side, "debater_a" if side == 0 else "debater_b", turn, f"prompt {branch}",
                  f"speech {key}", branch=branch)


# -- rewards and groups -------------------------------------------------------------------------------


def test_branch_rewards_groups_and_pairs_by_point():
    samples = [S("b0", "P", "tb0"), S("b1", "P", "tb1"),                   # point P: q1, side 0, turn 0
               S("d0", "P2", "td0"), S("d1", "P2", "td1"),                 # point P2: the same question, side, turn
               S("c0", "Q", "tc0", side=1), S("c1", "Q", "tc1", side=1),   # point Q: side 1
               S("e0", "F", "te0"), S("e1", "F", "te1"),                   # a failed verdict: point dropped whole
               S("g0", "G", "tg0")]                                        # one branch's game failed: dropped
    p0 = {"tb0": 0.9, "tb1": 0.4, "td0": 0.95, "td1": 0.85, "tc0": 0.3, "tc1": 0.7, "te0": None, "te1": 0.8,
          "tg0": 0.9}
    scored = branch_rewards(samples, p0, branches=2)
    assert [s.key for s in scored] == ["b0", "b1", "d0", "d1", "c0", "c1"]
    r = {s.key: s.reward for s in scored}
    assert r == pytest.approx({"b0": 0.8, "b1": -0.2, "d0": 0.9, "d1": 0.7, "c0": 0.4, "c1": -0.4})
    base = {s.key: s for s in with_baselines(scored)}
    # leave-one-out within the point only: b0's baseline is b1's reward, not the mean of b1, d0, d1
    assert base["b0"].baseline == pytest.approx(-0.2) and base["b0"].advantage == pytest.approx(1.0)
    assert base["d1"].baseline == pytest.approx(0.9) and base["d1"].advantage == pytest.approx(-0.2)
    assert base["c1"].advantage == pytest.approx(-0.8)
    pairs = best_worst_pairs(list(base.values()))
    # per point: P and P2 give a pair each; pooled by (question, side, turn) they would give one, (d0, b1)
    assert sorted((w.key, l.key) for w, l in pairs) == [("b0", "b1"), ("c0", "c1"), ("d0", "d1")]
    assert all(w.branch == l.branch and w.prompt == l.prompt for w, l in pairs)
    assert [(s.key, d) for s, d in kto_examples(list(base.values()))] == [
        ("b0", True), ("b1", False), ("d0", True), ("d1", False), ("c0", True), ("c1", False)]
    assert usable("pairs", list(base.values())) == 3
    assert branch_rewards(samples, p0, branches=3) == []  # no point has three branches
    with pytest.raises(ValueError, match="no branch point"):
        branch_rewards([Sample("x", "t", "q", 0, "debater_a", 0, "p", "s")], {"t": 0.5}, 2)


def test_other_rewards_keep_their_groups():
    """`branch` is empty for the judge and verifiable rewards: groups stay (question, side, turn)."""
    a = Sample("a", "t1", "q1", 0, "debater_a", 0, "p", "s", reward=0.6)
    b = Sample("b", "t2", "q1", 0, "debater_a", 0, "p", "s", reward=-0.2)
    assert a.group == b.group == ("q1", 0, 0, "")
    assert [(w.key, l.key) for w, l in best_worst_pairs([a, b])] == [("a", "b")]
    assert with_baselines([a, b])[0].baseline == pytest.approx(-0.2)


def test_config_fields_are_validated(tmp_path):
    cfg = tiny_cfg(tmp_path, reward="turn", samples=1)  # dpo pairs branches: one sample a question is enough
    assert cfg.turn_branches == 2 and cfg.turn_rounds is None
    assert tiny_cfg(tmp_path, reward="turn", protocol="debate", rounds=3, turn_rounds=[2, 0]).turn_rounds == (2, 0)
    with pytest.raises(ConfigError, match="turn_branches: input should be greater than or equal to 2"):
        tiny_cfg(tmp_path, reward="turn", turn_branches=1)
    with pytest.raises(ConfigError, match=r"turn_rounds: rounds are 0-based .* rounds: 2, .* got \[2\]"):
        tiny_cfg(tmp_path, reward="turn", protocol="debate", rounds=2, turn_rounds=[0, 2])
    with pytest.raises(ConfigError, match="turn_rounds: name at least one round"):
        tiny_cfg(tmp_path, reward="turn", turn_rounds=[])
    with pytest.raises(ConfigError, match="turn_rounds: a round is named twice"):
        tiny_cfg(tmp_path, reward="turn", turn_rounds=[0, 0])
    with pytest.raises(ConfigError, match="reward: unknown value 'process'"):
        tiny_cfg(tmp_path, reward="process")
    with pytest.raises(ConfigError, match="samples: objective dpo"):
        tiny_cfg(tmp_path, reward="judge", samples=1)


# -- branch points and openings -------------------------------------------------------------------


def _rollout(protocol, question, tid="r1", entry="current", status="complete", warnings=()):
    from debate.protocols import steps

    seats = (Seat("debater_a", entry, 0), Seat("debater_b", entry, 1))
    sides = {"debater_a": 0, "debater_b": 1}
    order = [(role, turn) for step in steps(protocol) for role, turn in step]
    speeches = tuple(Speech(tid, i, turn, role, sides[role], entry, f"speech {i} of {role}")
                     for i, (role, turn) in enumerate(order))
    return Transcript(tid, "run", "rollout-1", question.id, protocol.name, seats, status=status, warnings=warnings,
                      speeches=speeches, tags=("rollout", "iteration-1"))


@pytest.mark.parametrize("name, kept", [
    ("debate", {0: [], 1: [0], 2: [0, 1], 3: [0, 1, 2]}),            # sequential: everything before the speech
    ("simultaneous", {0: [1], 1: [0], 2: [0, 1, 3], 3: [0, 1, 2]}),   # and the other speaker of its step
])
def test_points_openings_and_requests(tmp_path, name, kept):
    from arenas.selfplay_games import speech_prompts
    from arenas.selfplay_turn import branch_points, branch_request, kept_speeches, plan_branches
    from debate.synthetic import generate

    protocol = get_protocol(name, 2, 30)
    q = generate(1, 5, "easy", "train")[0]
    cfg = tiny_cfg(tmp_path, reward="turn", protocol=name, rounds=2)
    t = _rollout(protocol, q)
    others = [_rollout(protocol, q, "r2", entry="start"), _rollout(protocol, q, "r3", status="failed"),
              _rollout(protocol, q, "r4", warnings=("passage truncated from 900 to 500 tokens for current's context",))]
    points = branch_points([t, *others], protocol)
    assert [(p.rollout.id, p.index) for p in points] == [("r1", i) for i in range(4)]
    assert [p.index for p in branch_points([t], protocol, rounds=(1,))] == [2, 3]
    planned = plan_branches("run", 1, points, 3)
    assert planned == plan_branches("run", 1, points, 3)  # stable ids
    assert len({h.id for _, h in planned}) == 12 and all(h.id != t.id for _, h in planned)
    p, h = planned[4]  # point 1, branch 1
    assert (p.index, h.sample, h.tags) == (1, 1, ("branch", "iteration-1", "point-r1:1"))
    assert (h.seats, h.question_id, h.status, h.speeches) == (t.seats, q.id, "running", ())
    # the engine's prompt of each original speech, rebuilt from the rollout
    engine_msgs = {s.index: m for _, s, m in speech_prompts([t], {q.id: q}, protocol)}
    for p, h in planned:
        opening = kept_speeches(p, protocol, h.id)
        assert [s.index for s in opening] == kept[p.index]
        assert all(s.transcript_id == h.id and s.text == t.speeches[s.index].text for s in opening)
        req = branch_request(p, protocol, q, cfg, h)
        assert req.messages == engine_msgs[p.index]  # the same history, so the same prompt
        assert (req.sampling.temperature, req.sampling.max_new_tokens) == (cfg.temperature, cfg.max_new_tokens)
    seeds = {branch_request(p, protocol, q, cfg, h).seed for p, h in planned}
    assert len(seeds) == 12  # every branch samples with a seed of its own


def test_open_branches_stores_openings_once_and_records_failures(tmp_path):
    from arenas.selfplay_turn import branch_points, open_branches, plan_branches
    from debate.backends.mock import mock_policy
    from debate.store import Store
    from debate.synthetic import generate

    protocol = get_protocol("simultaneous", 1, 30)
    q = generate(1, 5, "easy", "train")[0]
    cfg = tiny_cfg(tmp_path, reward="turn")
    store = Store(tmp_path / "store")
    planned = plan_branches("run", 1, branch_points([_rollout(protocol, q)], protocol), 2)
    policy = mock_policy("current")
    assert open_branches(store, planned[:3], {q.id: q}, protocol, policy, cfg) == 3
    assert open_branches(store, planned, {q.id: q}, protocol, policy, cfg) == 1  # only the one not stored
    assert [len(c) for c in policy.backend.calls] == [3, 1]
    stored = {t.id: t for t in store.transcripts("run")}
    for p, h in planned:
        t = stored[h.id]
        assert t.status == "running" and [s.index for s in t.speeches] == [0, 1]
        assert t.speeches[1 - p.index].text == p.rollout.speeches[1 - p.index].text  # the step's other speech, kept
        assert t.speeches[p.index].text.startswith("The answer is")  # the new one, from the policy
    broken = mock_policy("current", fail="generate")
    again = plan_branches("run", 2, branch_points([_rollout(protocol, q, "r9")], protocol), 2)
    assert open_branches(store, again, {q.id: q}, protocol, broken, cfg) == 4
    failed = [store.transcript(h.id) for _, h in again]
    assert all(t.status == "failed" and "generation failed" in (t.error or "") for t in failed)
    assert all(len(t.speeches) == 1 for t in failed)  # the kept speech only: nothing invented
    assert open_branches(store, again, {q.id: q}, protocol, broken, cfg) == 0  # a failure is stored, not retried


# -- training runs ----------------------------------------------------------------------------------


class Killed(Exception):
    """Stands for a kill -9 at the update: everything before it is stored, nothing after."""


def _capture_updates(learner, fail: bool = False) -> list[list[Sample]]:
    """Record the samples of each update; with `fail`, the update raises after recording (a kill)."""
    seen: list[list[Sample]] = []
    update = learner.server.update

    def recording(samples):
        seen.append(list(samples))
        if fail:
            raise Killed("killed before the update")
        return update(samples)

    learner.server.update = recording
    return seen


def _branches(store, run="r"):
    return [t for t in store.transcripts(run) if "branch" in t.tags]


def _point(t: Transcript) -> tuple[str, int]:
    tag = next(x for x in t.tags if x.startswith("point-"))
    rollout, index = tag.removeprefix("point-").rsplit(":", 1)
    return rollout, int(index)


def test_turn_reward_run_debate_two_rounds(tmp_path, tiny_model_dir, monkeypatch):
    """Sequential debate, 2 rounds: every speech of every rollout branched, later turns played from the branch."""
    from arenas.selfplay import TRAIN_JUDGE, run_training

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg(tmp_path / "results", reward="turn", protocol="debate", rounds=2, samples=1, iterations=1)
    learner, judges = handles(cfg, tiny_model_dir)
    seen = _capture_updates(learner)
    result = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges)
    store, row = result.store, result.rows[-1]
    rollouts = {t.id: t for t in store.transcripts("r") if "rollout" in t.tags}
    branches = _branches(store)
    assert len(rollouts) == 3 and len(branches) == 3 * 4 * 2  # rollouts x speeches x turn_branches
    verdicts = {v.transcript_id: v for v in store.verdicts("r", judge=TRAIN_JUDGE)}
    # the scripted judge counts by position, so in some draws it gives a branch one answer in both orders: an
    # indifferent verdict, recorded as a failure, and the branch's point is left out whole
    failed = {b.id for b in branches if verdicts[b.id].p_answer0 is None}
    assert all("indifferent" in verdicts[i].error for i in failed)
    skipped = {_point(b) for b in branches if b.id in failed}
    assert row["turn_points"] == 12 and row["turn_branches_opened"] == 24
    assert row["turn_points_skipped"] == len(skipped) <= 2
    by_point: dict[tuple[str, int], list[Transcript]] = {}
    for b in branches:
        assert b.status == "complete" and len(b.speeches) == 4 and "iteration-1" in b.tags
        assert len(verdicts[b.id].p_orders) == 2  # both orders
        rollout, index = _point(b)
        by_point.setdefault((rollout, index), []).append(b)
        r = rollouts[rollout]
        assert [s.text for s in b.speeches[:index]] == [s.text for s in r.speeches[:index]]  # the shared prefix
        assert all(s.entry == "current" for s in b.speeches)
    assert sorted(len(v) for v in by_point.values()) == [2] * 12
    # the later turns are played from the branch, not copied from the rollout
    later = [b for b in branches if _point(b)[1] < 3]
    assert sum(b.speeches[3].text != rollouts[_point(b)[0]].speeches[3].text for b in later) > len(later) // 2
    differ = sum(a.speeches[i].text != b.speeches[i].text for (_, i), (a, b) in by_point.items())
    assert differ >= 10  # the branched speeches are new samples (a rare tie of short texts is allowed)

    (samples,) = seen
    assert row["samples"] == len(samples) == 24 - 2 * len(skipped) and row["units"] > 0
    by_id = {b.id: b for b in branches}
    for s in samples:
        b = by_id[s.transcript_id]
        rollout, index = _point(b)
        assert s.branch == f"{rollout}:{index}" and s.completion == b.speeches[index].text
        assert s.reward == pytest.approx(side_rewards(verdicts[b.id].p_answer0)[s.side])  # 2p - 1 for its side
        peer = next(x for x in samples if x.branch == s.branch and x.key != s.key)
        assert s.prompt == peer.prompt and s.baseline == pytest.approx(peer.reward)  # one group per point
    pairs = best_worst_pairs(samples)
    assert pairs and len(pairs) == row["units"]
    for w, l in pairs:  # the same point and prompt, the prefixes equal, the branched speech differs
        assert w.branch == l.branch and w.prompt == l.prompt and w.reward > l.reward
        bw, bl = by_id[w.transcript_id], by_id[l.transcript_id]
        index = _point(bw)[1]
        assert [s.text for s in bw.speeches[:index]] == [s.text for s in bl.speeches[:index]]
        assert bw.speeches[index].text != bl.speeches[index].text


def flaky_letters(messages):
    """A scripted judge that gives no usable answer on about a tenth of the prompts (a recorded failure)."""
    from tests.test_selfplay import letters_from_length

    text = messages[-1][1]
    if int(hashlib.sha256(text.encode()).hexdigest()[:6], 16) % 10 == 0:
        return 0.0, 0.0
    return letters_from_length(messages)


def test_failed_branch_verdicts_skip_their_point(tmp_path, tiny_model_dir, monkeypatch):
    """The cpu-smoke shape (simultaneous, 1 round), 3 branches, KTO: a failed verdict on one branch drops
    its whole point, recorded in the row; the run goes on."""
    from arenas.selfplay import TRAIN_JUDGE, run_training
    from debate.backends.mock import mock_policy

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg(tmp_path / "results", reward="turn", turn_branches=3, objective="kto", iterations=1)
    learner, _ = handles(cfg, tiny_model_dir)
    seen = _capture_updates(learner)
    judges = [mock_policy("rm", letters=flaky_letters), mock_policy("heldout")]
    result = run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges)
    store, row = result.store, result.rows[-1]
    branches = _branches(store)
    assert len(branches) == 3 * 2 * 2 * 3  # questions x samples x speeches x branches
    assert all(len(b.speeches) == 2 for b in branches)
    for b in branches:  # simultaneous: the other speaker's speech of the step is the rollout's
        rollout = store.transcript(_point(b)[0])
        other = 1 - _point(b)[1]
        assert b.speeches[other].text == rollout.speeches[other].text
    verdicts = {v.transcript_id: v for v in store.verdicts("r", judge=TRAIN_JUDGE)}
    failed_points = {"{}:{}".format(*_point(b)) for b in branches if verdicts[b.id].p_answer0 is None}
    assert 0 < len(failed_points) < 12, "the scripted judge should fail some branches, not all"
    assert row["verdicts_failed"] == sum(1 for b in branches if verdicts[b.id].p_answer0 is None)
    assert row["turn_points_skipped"] == len(failed_points)
    samples = seen[0] if seen else []
    kept = {s.branch for s in samples}
    assert kept and not kept & failed_points and len(kept) == 12 - len(failed_points)
    assert all(sum(x.branch == k for x in samples) == 3 for k in kept)
    assert row["samples"] == 3 * len(kept) and row["dropped"] == 36 - 3 * len(kept)


def test_resume_samples_plays_and_judges_only_what_is_missing(tmp_path, tiny_model_dir, monkeypatch):
    """A run killed after its branches were judged, with parts of the branches removed as if the kill had
    come earlier: the resumed run generates and judges exactly the missing parts, and its rewards are the
    uninterrupted ones."""
    from arenas.selfplay import TRAIN_JUDGE, run_training
    from debate.store import Store

    monkeypatch.setenv("DEBATE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_cfg(tmp_path / "results", reward="turn", protocol="debate", rounds=2, samples=1, iterations=1)
    learner, judges = handles(cfg, tiny_model_dir)
    first = _capture_updates(learner, fail=True)
    with pytest.raises(Killed):
        run_training(cfg, run="r", progress=False, learner=learner, judge_policies=judges)
    store = Store(cfg.results)
    branches = sorted(_branches(store), key=lambda b: (_point(b), b.sample))
    assert len(branches) == 24
    # the kill came: while branch A played its later turns; before branch B was judged; before point P opened
    a = next(b for b in branches if _point(b)[1] == 0)
    unjudged = next(b for b in branches if _point(b)[1] == 2 and b.id != a.id)
    point = next(_point(b) for b in branches if _point(b)[1] == 1 and _point(b)[0] != _point(a)[0])
    gone = [b.id for b in branches if _point(b) == point]
    with store.transaction() as conn:
        conn.execute("DELETE FROM speeches WHERE transcript_id = ? AND idx > 1", (a.id,))
        conn.execute("UPDATE transcripts SET status = 'running', json = json_set(json, '$.status', 'running') WHERE id = ?",
                     (a.id,))
        conn.execute("DELETE FROM verdicts WHERE transcript_id IN (?, ?)", (a.id, unjudged.id))
        for t_id in gone:
            for table, key in (("transcripts", "id"), ("speeches", "transcript_id"), ("verdicts", "transcript_id")):
                conn.execute(f"DELETE FROM {table} WHERE {key} = ?", (t_id,))

    learner2, judges2 = handles(cfg, tiny_model_dir)
    generated, judged = [], []
    gen = learner2.server.generate
    learner2.server.generate = lambda reqs, reference=False: (generated.append(len(reqs)), gen(reqs, reference))[1]
    rm = judges2[0].backend
    second, generated_before = [], []

    def at_update(samples):
        judged.append(sum(len(c) for c in rm.score_calls))
        generated_before.append(sum(generated))
        second.append(list(samples))
        return learner2.server.learner.update(list(samples), kl=False)

    learner2.server.update = at_update
    result = run_training(cfg, run="r", resume=True, progress=False, learner=learner2, judge_policies=judges2)
    # before the update: A's turns 2 and 3; the point's 2 branch speeches and their turns 2 and 3 (2 x 2)
    assert generated_before == [2 + 2 + 4]
    assert judged == [2 * (1 + 1 + 2)]  # A, B and the point's two branches, each in both orders: nothing else
    store = result.store
    after = _branches(store)
    assert sorted(b.id for b in after) == sorted(b.id for b in branches)
    assert {b.id: [s.text for s in b.speeches] for b in after} == {b.id: [s.text for s in b.speeches] for b in branches}
    counts = {}
    for v in store.verdicts("r", judge=TRAIN_JUDGE):
        counts[v.transcript_id] = counts.get(v.transcript_id, 0) + 1
    assert max(counts.values()) == 1
    assert sorted((s.key, round(s.reward, 9)) for s in second[0]) == sorted((s.key, round(s.reward, 9)) for s in first[0])
    assert result.rows[-1]["turn_branches_opened"] == 2
