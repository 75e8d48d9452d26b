"""Self-play training (`debate train`): warm start, reward model, then iterations of rollouts, verdicts in
both orders, rewards, one update and a held-out evaluation, each iteration checkpointed and recorded.

Iteration 0 evaluates the warm-started policy before any update. A run killed at any point resumes
(`--resume RUN`) from the last complete iteration's checkpoint; the games it had already played and
judged are read back from the store (stable ids), so nothing is lost or repeated.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from debate.cache_owner import check_run_debater, record_run_debater
from debate.configs import ConfigError, PolicyConfig, dump
from debate.prompts import load_prompts
from debate.records import Question, RunInfo
from debate.store import Store
from debate.synthetic import generate
from debate.training.config import TrainConfig, load_train_config
from debate.training.iterations import iteration_rows, last_complete, record_iteration, record_stages
from debate.training.objectives import get_objective
from debate.training import rewards as R
from arenas.selfplay_cross import cross_rewards
from arenas.selfplay_eval import evaluate_iteration, hacking_signs, rollout_quoting
from arenas.selfplay_games import (CURRENT, HELDOUT_JUDGE, START, TRAIN_JUDGE, plan_eval, plan_rollouts,
                                   play_and_judge, protocol_of, samples_of)
from arenas.selfplay_turn import turn_rewards
from judges.model_judge import ModelJudge


@dataclass(frozen=True)
class TrainResult:
    run: str
    store: Store
    seconds: float
    rows: list[dict]


def trained_on(cfg: TrainConfig) -> dict[str, list[Question]]:
    """The questions the other stages learn from: the warm start's demonstrations and the reward model's training
    and validation sets (as judges.train draws them)."""
    from judges.reward_model import judge_config
    from judges.train import split_questions as judge_splits

    ws = cfg.warm_start
    rm = judge_splits(judge_config(cfg, Path(ws.name)))  # the debater's folder plays no part in the questions
    return {"warm_start": generate(ws.questions, ws.seed, cfg.difficulty, "warm-start"),
            "reward_model": rm["train"] + rm["val"]}


def split_questions(cfg: TrainConfig) -> tuple[list[Question], list[Question]]:
    """The training questions (every iteration's, with `fresh_questions`) and the held-out ones, checked disjoint
    (ids and passages); no held-out passage is one the warm start or the reward model learned from either."""
    n = cfg.train_questions.n * (cfg.iterations if cfg.fresh_questions else 1)
    train = generate(n, cfg.train_questions.seed, cfg.difficulty, "train")
    heldout = generate(cfg.heldout_questions.n, cfg.heldout_questions.seed, cfg.difficulty, "heldout")
    if {q.id for q in train} & {q.id for q in heldout} or {q.passage for q in train} & {q.passage for q in heldout}:
        raise ConfigError("train_questions and heldout_questions overlap; give them different seeds")
    passages = {q.passage for q in heldout}
    for stage, questions in trained_on(cfg).items():
        shared = passages & {q.passage for q in questions}
        if shared:
            raise ConfigError(f"heldout_questions: {len(shared)} of their passages are among the {stage} questions, "
                              f"which training learns from; choose another heldout_questions.seed")
    return train, heldout


def checkpoint_dir(cfg: TrainConfig, run: str, iteration: int) -> Path:
    return Path(cfg.results) / run / "checkpoints" / f"iteration-{iteration:04d}"


@dataclass
class Session:
    """What a run's iterations share: the store, the questions, the learner and the judges."""

    cfg: TrainConfig
    run: str
    store: Store
    train_q: list[Question]
    heldout_q: list[Question]
    learner: Any  # debate.actors.LearnerHandle
    judges: list[ModelJudge]  # the training judge first, then the held-out judge
    progress: bool = True

    @cached_property
    def questions(self) -> dict[str, Question]:
        return {q.id: q for q in self.train_q + self.heldout_q}

    def rollout_questions(self, it: int) -> list[Question]:
        """The questions iteration `it` (>= 1) plays its rollouts on: all of train_q, or with `fresh_questions`
        its own block of train_questions.n (a draw is the same questions at every length, so a resume with more
        iterations keeps the earlier blocks)."""
        if not self.cfg.fresh_questions:
            return self.train_q
        n = self.cfg.train_questions.n
        return self.train_q[(it - 1) * n : it * n]

    @cached_property
    def correct(self) -> dict[str, int]:
        """Question id -> the index of its correct answer."""
        return {q_id: q.correct for q_id, q in self.questions.items()}

    @property
    def policies(self) -> dict[str, Any]:
        return {CURRENT: self.learner.policy(CURRENT), START: self.learner.policy(START, reference=True)}

    def play(self, planned: Sequence[Any], judges: Sequence[ModelJudge]) -> list:
        return play_and_judge(self.store, planned, self.questions, protocol_of(self.cfg), self.policies, self.cfg,
                              judges, self.progress, (HELDOUT_JUDGE,) if self.cfg.heldout_reads_passage else ())


def rewards_for(s: Session, games: Sequence[Any], samples: Sequence[Any]) -> tuple[list, dict]:
    """Rewards from the training judge's verdicts (or the verifiable reward), with per-role baselines."""
    verdicts = {v.transcript_id: v for v in s.store.verdicts(s.run, judge=s.judges[0].name)}
    ids = {t.id for t in games}
    failed = sum(1 for t, v in verdicts.items() if t in ids and v.p_answer0 is None)
    if s.cfg.reward == "verifiable":
        from debate.training.quote_stats import supporting_by_transcript

        supported = supporting_by_transcript(games, s.questions)
        correct = {t.id: s.questions[t.question_id].correct for t in games}
        scored = R.verifiable_rewards(samples, supported, correct)
    else:
        p0 = {t: v.p_answer0 for t, v in verdicts.items() if t in ids}
        scored = R.assign_rewards(samples, p0)
    scored = R.with_baselines(scored)
    info = {"samples": len(scored), "dropped": len(samples) - len(scored), "verdicts_failed": failed,
            **R.reward_summary(scored, s.correct)}
    return scored, info


def reward_evidence(s: Session, games: Sequence[Any], scored: Sequence[Any]) -> dict:
    """How far the iteration's reward follows the evidence (quote_stats.evidence_agreement) and what its best
    and worst speeches teach about quoting on each side (quote_stats.pair_quoting), from the games the samples
    came from: the rollouts in hand, or (`reward: turn`) the branches, read one by one from the store."""
    from debate.training.quote_stats import evidence_agreement, pair_quoting, supporting_by_speech, tagged_by_speech

    known = {t.id: t for t in games}
    found = [t for t in (known.get(i) or s.store.transcript(i) for i in sorted({x.transcript_id for x in scored}))
             if t is not None]
    return {**evidence_agreement(scored, supporting_by_speech(found, s.questions)),
            **pair_quoting(R.best_worst_pairs(scored), tagged_by_speech(found), s.correct)}


def run_iteration(s: Session, it: int) -> dict:
    """One iteration: rollouts, rewards and an update (it >= 1), then the held-out evaluation."""
    cfg, t0 = s.cfg, time.perf_counter()
    row: dict[str, Any] = {"objective": cfg.objective}
    protocol = protocol_of(cfg)
    if it > 0:
        row["rollout_version"] = s.learner.call("version")  # the weights the rollouts come from (0: as warm-started)
        games = s.play(plan_rollouts(s.run, it, s.rollout_questions(it), cfg.samples, protocol), s.judges[:1])
        if cfg.reward == "turn":  # the process reward: the rollouts' speeches branched, each branch judged
            scored, info = turn_rewards(s, it, games)
        else:
            samples = samples_of(games, s.questions, protocol, lambda msgs: s.learner.call("render", msgs))
            if cfg.opponents == "all":  # every pairing of the question's speeches judged
                scored, info = cross_rewards(s, it, games, samples)
            else:
                scored, info = rewards_for(s, games, samples)
        row.update(info)
        if cfg.missing_eos_penalty:
            scored = R.with_baselines(R.penalize_missing_eos(scored, cfg.missing_eos_penalty))
            row["penalized_cut"] = sum(1 for x in scored if not x.ended)
        row.update(reward_evidence(s, games, scored))
        row.update(rollout_quoting(games, s.questions))
        row["rollout_seconds"] = round(time.perf_counter() - t0, 1)
        scored = R.of_sides(scored, s.correct, cfg.train_sides)
        units = R.usable(get_objective(cfg.objective).kind, scored)
        row["units"] = units
        if units == 0:
            row["skipped"] = "no usable training units: every verdict failed or tied, or no group had two rewards"
        else:
            update = s.learner.call("update", scored)  # separate layout: the new adapter is handed over too
            row.update({k: v for k, v in update.items() if k != "kl"})
        row["update_seconds"] = round(time.perf_counter() - t0 - row["rollout_seconds"], 1)
    t1 = time.perf_counter()
    row["eval_version"] = s.learner.call("version")
    stored = s.play(plan_eval(s.run, it, s.heldout_q, protocol), s.judges)
    eval_samples = samples_of([t for t in stored if "self" in t.tags], s.questions, protocol,
                              lambda msgs: s.learner.call("render", msgs))
    kls = s.learner.call("kl_each", eval_samples) if it > 0 else []
    verdicts = s.store.verdicts(s.run)
    row.update(evaluate_iteration(stored, verdicts, s.questions, s.judges[0].name, s.judges[1].name, kls))
    row["eval_seconds"] = round(time.perf_counter() - t1, 1)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _announce(row: dict, it: int) -> None:
    def fmt(key: str) -> str:
        v = row.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        lo, hi = row.get(f"{key}_low"), row.get(f"{key}_high")
        return f"{v:.3f} [{lo:.2f}, {hi:.2f}]" if lo is not None and not math.isnan(lo) else f"{v:.3f}"

    extra = f", skipped: {row['skipped']}" if row.get("skipped") else ""
    print(f"iteration {it}: judge accuracy {fmt('judge_accuracy')}, held-out judge {fmt('heldout_accuracy')}, "
          f"vs start {fmt('versus_win_rate')}, honest supporting quotes {fmt('honest_supporting')}, "
          f"KL {row.get('kl', math.nan):.3f}, {row['seconds']:.0f} s{extra}", flush=True)


def run_iterations(s: Session) -> list[dict]:
    """Iterations from the one after the last complete one to `cfg.iterations`, each checkpointed, then recorded."""
    start = last_complete(s.store, s.run) + 1
    if start > 0:
        s.learner.call("load", str(checkpoint_dir(s.cfg, s.run, start - 1)))
    for it in range(start, s.cfg.iterations + 1):
        row = run_iteration(s, it)
        s.learner.call("save", str(checkpoint_dir(s.cfg, s.run, it)), it, {"run": s.run})
        record_iteration(s.store, s.run, it, row)  # after the checkpoint: the row marks the iteration complete
        _announce(row, it)
    from debate.embedded import debater_dir

    final = s.learner.call("export", str(debater_dir(s.run) / "model"))
    record_run_debater(s.run, s.cfg.results)
    print(f"the trained debater is stored in {final}; play it in a tournament as `model: debater:{s.run}`", flush=True)
    rows = iteration_rows(s.store, s.run)
    for sign in hacking_signs(rows, s.cfg.train_sides):
        print(f"warning: {sign}")
    return rows


def stored_train_config(store: Store, run: str) -> TrainConfig:
    info = store.run(run)
    if info.kind != "train":
        raise ConfigError(f"run {run} is a {info.kind} run, not a training run; resume it with `debate tournament --resume`")
    return load_train_config(yaml.safe_load(info.config), source=f"run {run} (stored config)")


def new_run_name(cfg: TrainConfig) -> str:
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_run(cfg: TrainConfig, run: Optional[str], resume: bool, store: Store) -> str:
    if resume:
        if run is None:
            raise ValueError("resume needs the run name")
        store.run(run)
        return run
    run = run or new_run_name(cfg)
    store.add_run(RunInfo(name=run, kind="train", config=dump(cfg), created=time.time()))
    folder = Path(cfg.results) / run
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dump(cfg))
    return run


def prepare_debater(cfg: TrainConfig, progress: bool) -> Path:
    """The warm-started debater (trained once, then cached)."""
    from debate.training.warm_start import ensure_warm_start

    return ensure_warm_start(cfg, progress)


def prepare(cfg: TrainConfig, progress: bool) -> tuple[Path, dict]:
    """The cached stages: the trained judges it needs, the warm-started debater, the reward model. Returns the
    debater's folder and what the run records of the stages (`stages_of`)."""
    from arenas.tournament import ensure_model
    from judges.reward_model import ensure_reward_model

    for model in (cfg.reward_model.init, cfg.heldout_judge):
        ensure_model(model, progress)
    debater = prepare_debater(cfg, progress)
    _, rm_stats = ensure_reward_model(cfg, debater, progress)
    return debater, stages_of(debater, rm_stats)


def stages_of(debater: Path, rm_stats: dict) -> dict:
    """The warm start's size and probe (tag use, verified and supporting quotes before and after) and the reward
    model's held-out accuracy, from their cache entries."""
    import json

    meta = debater.parent / "debater.json"
    warm = json.loads(meta.read_text()) if meta.exists() else {}
    return {"warm_start": {k: warm.get(k) for k in ("name", "demonstrations", "steps", "probe")},
            "reward_model": {k: rm_stats.get(k) for k in ("name", "init", "accuracy")}}


def start_actors(cfg: TrainConfig, debater: Path) -> tuple[Any, list[Any]]:
    """The learner (sharing its actor with the generating policy, or beside it in its own: `cfg.learner`) and
    the two judges, as Ray actors. On cuda each actor gets an equal share of one GPU (Ray hides the GPUs from
    an actor that asks for none)."""
    from debate.actors import RemotePolicy, check_placement, start_ray
    from debate.training.server import resolve_layout, start_learner, uses_cuda

    layout = resolve_layout(cfg)
    gpu = 1.0 / (4 if layout == "separate" else 3) if cfg.use_ray and uses_cuda(cfg.device) else 0.0
    learner_cfg = PolicyConfig(CURRENT, model=str(debater), device=cfg.device, dtype="float32", threads=cfg.threads,
                               max_batch=cfg.max_batch, num_cpus=1.0, num_gpus=gpu)
    judges = [PolicyConfig(name, model=model, device=cfg.device, max_batch=cfg.max_batch, num_cpus=0.5, num_gpus=gpu)
              for name, model in (("reward-model", f"judge:{cfg.reward_model.name}"), ("heldout-judge", cfg.heldout_judge))]
    if cfg.use_ray:
        start_ray(cfg.ray, 2.0 if layout == "shared" else 3.0)  # separate: the generating policy's CPU too
        check_placement([learner_cfg, *judges])  # an error now, not an actor pending forever
        return start_learner(cfg, learner_cfg, layout), [RemotePolicy(p) for p in judges]
    from debate.actors import LocalPolicy, PolicyServer

    return start_learner(cfg, learner_cfg, layout), [LocalPolicy(PolicyServer(p)) for p in judges]


def run_training(cfg: TrainConfig, run: Optional[str] = None, resume: bool = False, progress: bool = True,
                 learner: Any = None, judge_policies: Optional[Sequence[Any]] = None) -> TrainResult:
    """Run (or resume) self-play training; `learner` and `judge_policies` (training judge, held-out judge)
    may be passed in, which skips the cached stages (tests)."""
    t0 = time.perf_counter()
    run = run or new_run_name(cfg)
    check_run_debater(run, cfg.results, cfg.warm_start.name)  # both are stored as debater:NAME
    from dataclasses import replace

    from debate.training.server import describe_layout, resolve_layout

    cfg = replace(cfg, learner=resolve_layout(cfg, learner))  # the run stores the layout `auto` resolved to
    train_q, heldout_q = split_questions(cfg)
    store = Store(cfg.results)
    if resume:
        store.run(run or "")  # a clear error before any model loads
    stages: dict = {}
    if learner is None:
        debater, stages = prepare(cfg, progress)
        learner, judge_policies = start_actors(cfg, debater)
    run = start_run(cfg, run, resume, store)
    if stages:
        record_stages(store, run, stages)
    if getattr(learner, "layout", "shared") == "separate" and learner.folder is None:
        learner.folder = Path(cfg.results) / run / "adapters"  # where each new adapter is handed over
    print(describe_layout(cfg, cfg.learner), flush=True)
    if stages:
        from arenas.train_report import reward_model_line  # the report's pandas, only when there is a line to print

        print(reward_model_line(stages["reward_model"], cfg.reward_model.name), flush=True)
    store.add_questions(run, train_q + heldout_q)
    prompts = load_prompts("default")
    assert judge_policies is not None and len(judge_policies) == 2
    judges = [ModelJudge(name, p, prompts, "logprob", cfg.min_letter_mass)
              for name, p in zip((TRAIN_JUDGE, HELDOUT_JUDGE), judge_policies)]
    rows = run_iterations(Session(cfg, run, store, train_q, heldout_q, learner, judges, progress))
    return TrainResult(run, store, time.perf_counter() - t0, rows)
