"""`debate train --from-run RUN`: one offline update of the debater from a stored run's verdicts.

Any judge the store knows supplies the reward: a model judge's verdicts, or people's verdicts from the
browser (human feedback as the reward). Every speech of the run's complete debates is a sample (the
debater learns from what was said, whoever said it), rewarded R = 2p - 1 for its side with p the mean
of the transcript's verdicts, with per-role baselines. The update is stored as a training run of its own.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from typing import Optional

from debate.cache_owner import check_run_debater, record_run_debater
from debate.configs import ConfigError, PolicyConfig
from debate.store import Store
from debate.training import rewards as R
from debate.training.config import TrainConfig
from debate.training.iterations import record_iteration
from debate.training.objectives import get_objective
from arenas.judging import protocol_for, stored_config, stored_protocols
from arenas.selfplay import checkpoint_dir, new_run_name, start_run
from arenas.selfplay_games import samples_from, speech_prompts


def verdict_means(store: Store, run: str, judge: Optional[str]) -> dict[str, float]:
    """Each transcript's mean probability of answer 0 over its usable verdicts (several people may judge one)."""
    ps: dict[str, list[float]] = defaultdict(list)
    for v in store.verdicts(run, judge=judge):
        if v.p_answer0 is not None:
            ps[v.transcript_id].append(v.p_answer0)
    return {t: sum(p) / len(p) for t, p in ps.items()}


def offline_update(cfg: TrainConfig, source: str, judge: Optional[str] = None, run: Optional[str] = None,
                   progress: bool = True, learner=None) -> str:
    """Train the warm-started debater once on `source`'s speeches and verdicts; returns a one-line summary."""
    if cfg.reward != "judge":
        raise ConfigError(f"reward: {cfg.reward} with --from-run: an offline update is rewarded by the stored verdicts "
                          f"(reward: judge); {cfg.reward} needs {'branches played by the live policy' if cfg.reward == 'turn' else 'self-play rollouts'}; "
                          f"drop --set reward={cfg.reward}, or run `debate train` without --from-run")
    if cfg.opponents != "game":
        raise ConfigError(f"opponents: {cfg.opponents} with --from-run: an offline update is rewarded by the verdicts "
                          f"stored for the games that were played; pairing speeches anew needs live judging; drop "
                          f"--set opponents={cfg.opponents}, or run `debate train` without --from-run")
    t0 = time.perf_counter()
    named = replace(cfg, name=f"{cfg.name}-from-{source}")
    run = run or new_run_name(named)
    check_run_debater(run, cfg.results, cfg.warm_start.name)
    store = Store(cfg.results)
    store.run(source)  # a clear error when it is not there
    p0 = verdict_means(store, source, judge)
    if not p0:
        who = f"judge {judge!r}" if judge else "any judge"
        raise ConfigError(f"run {source} has no usable verdict from {who}; judge it first (`debate judge {source} "
                          f"--judge SPEC`, or people in `debate ui`), or name another --judge")
    tournament = stored_config(store, source)
    styles = {e.name: e.prompt for e in tournament.entries} if tournament else {}
    protocols = stored_protocols(store, source)
    questions = store.questions(source)
    games = [t for t in store.transcripts(source, status="complete") if t.speeches]
    found = speech_prompts(games, questions, lambda t: protocol_for(t, protocols), entry=None,
                           style=lambda e: styles.get(e, "default"))
    if learner is None:
        from arenas.selfplay import prepare_debater
        from debate.actors import LearnerHandle
        from debate.training.server import LearnerServer

        debater = prepare_debater(cfg, progress)
        learner = LearnerHandle(server=LearnerServer(
            PolicyConfig("current", model=str(debater), device=cfg.device, dtype="float32", threads=cfg.threads), cfg))
    samples = samples_from(found, lambda msgs: learner.call("render", msgs))
    scored = R.with_baselines(R.penalize_missing_eos(R.assign_rewards(samples, p0), cfg.missing_eos_penalty))
    scored = R.of_sides(scored, {q_id: q.correct for q_id, q in questions.items()}, cfg.train_sides)
    units = R.usable(get_objective(cfg.objective).kind, scored)
    run = start_run(named, run, False, store)
    row = {"objective": cfg.objective, "source_run": source, "judge": judge or "all", "samples": len(scored),
           "dropped": len(samples) - len(scored), "units": units}
    if units == 0:
        row["skipped"] = (f"no usable training units in {source}: {cfg.objective} needs "
                          + ("two speeches with different rewards for the same question, side and turn"
                             if get_objective(cfg.objective).kind == "pairs" else "speeches whose reward differs from their baseline"))
    else:
        row.update({k: v for k, v in learner.call("update", scored).items() if v is not None})
        row["kl"] = learner.call("kl", scored)  # on the run's speeches, after the update
    row["seconds"] = round(time.perf_counter() - t0, 1)
    learner.call("save", str(checkpoint_dir(cfg, run, 1)), 1, {"run": run, "source_run": source})
    record_iteration(store, run, 1, row)
    from debate.embedded import debater_dir

    final = learner.call("export", str(debater_dir(run) / "model"))
    record_run_debater(run, cfg.results, {"source_run": source})
    return (f"run {run}: one {cfg.objective} update from {source}'s verdicts ({judge or 'every judge'}): {len(scored)} "
            f"speeches, {units} training units" + (f", skipped: {row['skipped']}" if units == 0 else
            f", loss {row.get('loss', float('nan')):.4f}, KL {row.get('kl', float('nan')):.4f}")
            + f"; the debater is stored in {final} (`model: debater:{run}`)")
