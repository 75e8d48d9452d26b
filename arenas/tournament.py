"""Tournaments: schedule, play (batched engine over Ray actors), judge, store; resumable at any point."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from debate.configs import ConfigError, TournamentConfig, dump
from debate.engine import Debate, Engine
from debate.policy import Policy
from debate.prompts import load_prompts
from debate.protocols import Protocol
from debate.questions import load_question_set
from debate.quotes import QuoteRules
from debate.records import Question, RunInfo, Transcript
from debate.store import Store
from arenas.judging import cases_to_judge, judge_cases, protocols_of, stored_config
from arenas.schedule import round_robin
from judges.base import Judge
from judges.model_judge import ModelJudge


@dataclass(frozen=True)
class RunResult:
    run: str
    store: Store
    seconds: float
    played: int  # transcripts advanced in this call
    judged: int  # verdicts written in this call
    retried: tuple[int, int] = (0, 0)  # failed (transcripts, verdicts) reopened by `retry_failed`
    placement: dict = field(default_factory=dict)  # policy -> where its actor runs (node_id, node_ip, host, pid)


def questions_of(cfg: TournamentConfig, base: Optional[Path] = None) -> list[Question]:
    spec = {k: v for k, v in vars(cfg.questions).items() if v is not None}
    if spec.get("source") != "synthetic":
        spec.pop("difficulty", None)
        spec.pop("seed", None)
    return load_question_set(spec, base=base)


def new_run_name(cfg: TournamentConfig) -> str:
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def save_config(cfg: TournamentConfig, run: str, store: Store) -> None:
    """The run's resolved configuration, in the store and as results/RUN/config.yaml."""
    store.set_run_config(run, dump(cfg))
    folder = Path(cfg.results) / run
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dump(cfg))


def resolved_config(cfg: TournamentConfig, policies: dict[str, Policy]) -> TournamentConfig:
    """`cfg` with each started policy's `auto` device and dtype replaced by what its backend chose."""
    out = []
    for p in cfg.policies:
        handle = policies.get(p.name)
        device, dtype = getattr(handle, "device", ""), getattr(handle, "dtype", "")
        out.append(replace(p, device=device or p.device, dtype=dtype or p.dtype))
    return replace(cfg, policies=tuple(out))


def prepare_run(cfg: TournamentConfig, run: str, store: Store, questions: Optional[list[Question]] = None,
                ) -> tuple[list[Transcript], dict[str, Question]]:
    """Save the config, the questions (loaded here unless given) and the planned transcripts (idempotent).

    A run that already has transcripts keeps the plan it was made with: a resumed run plans nothing new,
    even where the schedule has changed since (the first speaker's side, say), so it never gains a
    second set of debates. The stored plan comes back as headers: the caller reads the speeches once."""
    store.add_run(RunInfo(name=run, kind="tournament", config=dump(cfg), created=time.time()))
    save_config(cfg, run, store)
    questions = questions_of(cfg) if questions is None else questions
    store.add_questions(run, questions)
    if store.count("transcripts", run):
        return store.transcripts(run, speeches=False), {q.id: q for q in questions}
    planned = round_robin(
        run, [e.name for e in cfg.entries], questions, list(protocols_of(cfg).values()), cfg.samples, cfg.quotes.mode
    )
    store.add_transcripts(planned)
    return planned, {q.id: q for q in questions}


def resume_config(store: Store, run: str) -> TournamentConfig:
    """The run's stored config, with `results` set to the folder of the store it is read from: a resumed
    run writes where it reads (a moved or copied results folder included), never to the folder it
    was first run in."""
    cfg = stored_config(store, run)
    if cfg is None:
        raise ConfigError(f"run {run} is a {store.run(run).kind} run, not a tournament: it cannot be resumed; "
                          f"re-judge it with `debate judge run {run} --judge SPEC` instead")
    return replace(cfg, results=str(store.folder))


def play(
    cfg: TournamentConfig, run: str, store: Store, policies: dict[str, Policy], progress: bool = True,
    questions: Optional[dict[str, Question]] = None, transcripts: Optional[list[Transcript]] = None,
) -> list[Transcript]:
    """Advance every unfinished transcript of the run; returns those it advanced, as they ended (with their
    speeches). The run's questions and transcripts may be passed in when already read."""
    questions = store.questions(run) if questions is None else questions
    transcripts = store.transcripts(run, status="running") if transcripts is None else transcripts
    protocols = protocols_of(cfg)
    debates = [
        Debate(t, questions[t.question_id], protocols[t.protocol], list(t.speeches))
        for t in transcripts if t.status == "running"
    ]
    engine = Engine(
        {name: policies[name] for name in {e.policy for e in cfg.entries}},
        cfg.entries,
        load_prompts("default"),
        QuoteRules(cfg.quotes.mode, cfg.quotes.min_words, cfg.quotes.max_edit_ratio),
        store=store,
        seed=cfg.seed,
        overflow=cfg.context_overflow,
    )
    engine.run(debates, progress=progress)
    return [replace(d.transcript, speeches=tuple(d.speeches)) for d in debates]


def judge_run(
    store: Store, run: str, judge: Judge, protocols: dict[str, Protocol], progress: bool = True,
    questions: Optional[dict[str, Question]] = None, transcripts: Optional[list[Transcript]] = None,
) -> int:
    """Judge every complete transcript of the run that has no verdict from this judge yet."""
    cases = cases_to_judge(store, run, judge.name, protocols, questions, transcripts)
    judge_cases(judge, cases, store, progress)
    return len(cases)


def ensure_model(model: str, progress: bool = True, train: bool = True) -> None:
    """Train a `judge:NAME` model the cache does not have yet, from its preset (once), saying so first;
    with `train=False` a missing judge is an error naming the command that trains it."""
    from debate.configs import ConfigError
    from debate.embedded import judge_dir
    from judges.presets import expected_minutes, preset_names, train_config

    if not model.startswith("judge:"):
        return
    name = model.split(":", 1)[1]
    if (judge_dir(name) / "model" / "config.json").exists() or name not in preset_names():
        return  # present, or no preset to train it from: resolve_model will say how to make it
    if not train:
        raise ConfigError(f"trained judge {name!r} is not in the cache ({judge_dir(name)}) and --no-train was given; "
                          f"train it with `debate judge train --preset {name}`, or drop --no-train")
    from judges.train import train_judge

    cfg = train_config(None, name)
    ensure_model(cfg.base_model, progress, train)  # a preset may start from another trained judge
    print(f"trained judge {name!r} is not in the cache yet: training it first, once ({expected_minutes(name)}; "
          f"stored in {judge_dir(name)}; --no-train refuses instead)", flush=True)
    train_judge(cfg, progress=progress)


def run_tournament(
    cfg: TournamentConfig,
    run: Optional[str] = None,
    resume: bool = False,
    progress: bool = True,
    policies: Optional[dict[str, Policy]] = None,
    train_judges: bool = True,
    retry_failed: bool = False,
    backends: Optional[dict[str, Any]] = None,
) -> RunResult:
    """Run (or resume) a tournament and store everything; `policies` may be passed in (tests), or `backends`
    (by policy name) for the actors to serve instead of the configured ones.

    `retry_failed` (with `resume`) first reopens what is stored as failed (`Store.reopen_failed`): failed
    debates continue from their last stored speech, verdicts whose judge call failed are judged again;
    each failure stays in the store's history tables, and the live tables keep one row per debate."""
    if retry_failed and not resume:
        raise ConfigError("--retry-failed re-runs the failed debates of a stored run: give the run with "
                          "--resume RUN (`debate tournament --resume RUN --retry-failed`)")
    start = time.perf_counter()
    needed = [cfg.policy(n) for n in sorted({e.policy for e in cfg.entries} | ({cfg.judge.policy} if cfg.judge.kind == "model" else set()))]
    # loaded first: a bad question file is an error now, not after minutes of judge training
    questions = questions_of(cfg)
    if policies is None:
        from debate.backends.registry import check_backend

        for p in needed:  # before anything is stored: a missing vLLM, an unreachable server, a refused or failed
            if p.name not in (backends or {}):  # judge training leaves no run behind
                check_backend(p)
            if p.backend != "openai":  # an API model's name is the server's, never a cached judge
                ensure_model(p.model, progress, train_judges)
    store = Store(cfg.results)
    if resume:
        if run is None:
            raise ValueError("resume needs the run name")
        store.run(run)  # a clear error when it does not exist
    else:
        run = run or new_run_name(cfg)
    prepare_run(cfg, run, store, questions)
    if policies is not None:
        return _play_and_judge(cfg, run, store, policies, progress, retry_failed, start)
    from debate.actors import start_policies

    started = start_policies(needed, cfg.ray, backends)
    try:
        return _play_and_judge(cfg, run, store, started, progress, retry_failed, start)
    finally:  # also on Ctrl-C and SIGTERM: the actors must not run on after their driver (see debate.actors)
        for handle in started.values():
            handle.close()


def _play_and_judge(cfg: TournamentConfig, run: str, store: Store, policies: dict[str, Policy], progress: bool,
                    retry_failed: bool, start: float) -> RunResult:
    placement = {name: dict(getattr(h, "info", {})) for name, h in policies.items() if getattr(h, "info", None)}
    if placement:
        store.add_placements(run, time.time(), placement)
    retried = (0, 0)
    if retry_failed:
        retried = store.reopen_failed(run, cfg.judge.name if cfg.judge.kind == "model" else None)
    cfg = resolved_config(cfg, policies)
    save_config(cfg, run, store)  # what `auto` chose (device, dtype) is part of the run's record
    questions, transcripts = store.questions(run), store.transcripts(run)  # read once, for play and judging
    advanced = play(cfg, run, store, policies, progress, questions, transcripts)
    played = len(advanced)
    now = {t.id: t for t in advanced}
    complete = [t for t in (now.get(t.id, t) for t in transcripts) if t.status == "complete"]
    if cfg.judge.kind == "human":
        from judges.human_queue import HumanQueue

        queued = HumanQueue(store).enqueue(run, complete, cfg.judge.judges_per_debate, cfg.judge.reveal)
        print(f"{queued} judging slots queued for human judges; start `debate ui` and add judges with `debate judges add NAME`")
        return RunResult(run, store, time.perf_counter() - start, played, 0, retried, placement)
    judge = ModelJudge(cfg.judge.name, policies[cfg.judge.policy], load_prompts("default"), cfg.judge.mode, cfg.judge.min_letter_mass)
    judged = judge_run(store, run, judge, protocols_of(cfg), progress, questions, complete)
    return RunResult(run, store, time.perf_counter() - start, played, judged, retried, placement)
