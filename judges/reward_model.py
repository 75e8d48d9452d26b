"""The reward model of self-play training: a trained judge fine-tuned further on the warm-started
debaters' own debates (labelled by the ground truth) as well as templated ones, then scored on held-out
debates of the same debaters, before and after. A judge that checks evidence on templates is at chance on
speeches unlike its training data (DESIGN.md, Training), so the held-out policy accuracy is the number
that matters. Cached as judge NAME (`judge:NAME`) with judge.json and reward_model.json.

Lives in judges/ (not debate/training/) because it reuses judges.train; debate/ never imports judges/.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

from debate.configs import ConfigError
from debate.embedded import judge_dir, resolve_model
from debate.intervals import wilson_interval
from debate.records import to_dict
from debate.training.config import TrainConfig, check_cached
from debate.training.warm_start import probe_debates, protocol_of
from judges.judge_data import Example, evidence_decides, from_transcripts, templated


# reward-model settings added after caches were made, with the value every earlier cache was made with
ADDED_SETTINGS = {"twins": False, "letter_mass": 0.0}


def _accuracy(scorer: Any, examples: list[Example]) -> dict:
    """Order-averaged accuracy over debates, with its Wilson interval."""
    from judges.validation import accuracy_on

    n = len(examples)
    if not n:  # no debate of that kind (none decided by evidence, say): nothing to score, stored as null
        return {"accuracy": None, "correct": 0, "n": 0, "low": None, "high": None}
    k = round(accuracy_on(scorer, examples) * n)
    low, high = wilson_interval(k, n)
    return {"accuracy": k / n, "correct": k, "n": n, "low": low, "high": high}


def seeds(cfg: TrainConfig) -> dict[str, int]:
    """Question seeds of the reward model's train, validation and test sets, checked against the run's own."""
    s = cfg.reward_model.seed
    out = {"train": s, "validation": s + 1, "test": s + 2}
    taken = {"train_questions": cfg.train_questions.seed, "heldout_questions": cfg.heldout_questions.seed,
             "warm_start": cfg.warm_start.seed, "warm_start probe": cfg.warm_start.probe_seed}
    for split, seed in out.items():
        for name, other in taken.items():
            if seed == other:
                raise ConfigError(f"reward_model.seed: its {split} questions (seed {seed}) would be the {name} questions; "
                                  f"choose a reward_model.seed whose seed, seed+1 and seed+2 differ from {sorted(taken.values())}")
    return out


def judge_config(cfg: TrainConfig, debater: Path) -> Any:
    """The judges.train config the reward model is trained with."""
    from judges.train import JudgeTrainConfig

    rm, s = cfg.reward_model, seeds(cfg)
    return JudgeTrainConfig(
        name=rm.name, base_model=rm.init, objective=rm.objective, method="full", train_layers=rm.train_layers, lr=rm.lr,
        batch_debates=rm.batch_debates, epochs=rm.epochs, difficulty=cfg.difficulty,
        train_questions=rm.templated_questions, val_questions=rm.val_questions, test_questions=rm.test_questions,
        generated_train=rm.policy_questions, generated_test=0, debater_max_new_tokens=cfg.max_new_tokens,
        debater_model=str(debater), train_seed=s["train"], val_seed=s["validation"], test_seed=s["test"],
        twins=rm.twins, letter_mass=rm.letter_mass, seed=cfg.seed, min_letter_mass=cfg.min_letter_mass,
        device=cfg.device, threads=cfg.threads,
        warmup_steps=min(10, max(1, (rm.templated_questions + 2 * rm.policy_questions) // rm.batch_debates // 5)),
    )


def init_judge_path(init: str, ensure_init: Optional[Callable[[str], Path]] = None) -> Path:
    """The initial judge's model folder; a missing trained judge is made by `ensure_init` or named in the error."""
    try:
        return resolve_model(init)
    except FileNotFoundError:
        if ensure_init is None:
            name = init.split(":", 1)[1] if init.startswith("judge:") else init
            raise FileNotFoundError(
                f"reward_model.init {init!r}: the judge the reward model starts from is not trained yet; train it "
                f"first with `debate judge train --preset {name}`") from None
        return Path(ensure_init(init))


def train_reward_model(cfg: TrainConfig, debater: Path, progress: bool = True,
                       ensure_init: Optional[Callable[[str], Path]] = None) -> tuple[Path, dict]:
    """Generate the policy debates, fine-tune the initial judge on them and templated ones, score it; store."""
    from debate.backends.hf import TransformersBackend
    from judges.train import LetterScorer, split_questions, train_judge

    start = time.perf_counter()
    rm = cfg.reward_model
    jcfg = judge_config(cfg, debater)
    init = init_judge_path(rm.init, ensure_init)
    sets = split_questions(jcfg)  # disjoint by seed, checked
    train_q, val_q, test_q = sets["train"], sets["val"], sets["test"]
    protocol = protocol_of(cfg)

    # the warm-started debaters play the training and held-out questions, both seatings
    t0 = time.perf_counter()
    writer = TransformersBackend(debater, device=cfg.device, threads=cfg.threads or None, name="debater")
    policy_train = probe_debates(writer, cfg, train_q[rm.templated_questions :], jcfg.train_seed, progress, "rm-train")
    policy_test = probe_debates(writer, cfg, test_q, jcfg.test_seed, progress, "rm-test")
    del writer
    gc.collect()
    generate_seconds = time.perf_counter() - t0
    by_id = {q.id: q for q in train_q + test_q}
    data = {
        "train": templated(train_q[: rm.templated_questions], jcfg.seed) + from_transcripts(policy_train, by_id, protocol),
        "val": templated(val_q, jcfg.seed),
    }
    policy = from_transcripts(policy_test, by_id, protocol)
    # the policy debates whose quotes decide them: what a judge that checks evidence can get right
    tests = {"policy": policy, "policy_decided": [ex for ex in policy if evidence_decides(ex)],
             "templated": templated(test_q, jcfg.seed)}

    from debate.prompts import load_prompts

    base = TransformersBackend(init, device=cfg.device, dtype="float32", threads=cfg.threads or None, name="judge")
    scorer = LetterScorer(base, load_prompts("default"))
    before = {kind: _accuracy(scorer, ex) for kind, ex in tests.items()}
    folder = judge_dir(rm.name)
    train_judge(jcfg, progress, out=folder, base=base, data=data)
    base.model.eval()
    after = {kind: _accuracy(scorer, ex) for kind, ex in tests.items()}
    (folder / "policy_test.jsonl").write_text("".join(json.dumps(to_dict(t)) + "\n" for t in policy_test))
    (folder / "policy_train.jsonl").write_text("".join(json.dumps(to_dict(t)) + "\n" for t in policy_train))
    meta = {
        "name": rm.name, "init": rm.init, "init_path": str(init), "debater": str(debater),
        "reward_model": asdict(rm),
        "protocol": {"name": protocol.name, "rounds": protocol.rounds, "word_limit": protocol.word_limit,
                     "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p},
        "seeds": seeds(cfg),
        "data": {"templated_train": rm.templated_questions, "policy_train_debates": len(policy_train),
                 "val": len(data["val"]), "test_policy_debates": len(tests["policy"]), "test_templated": len(tests["templated"])},
        "accuracy": {kind: {"before": before[kind], "after": after[kind]} for kind in tests},
        "generate_seconds": round(generate_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "created": time.time(),
    }
    (folder / "reward_model.json").write_text(json.dumps(meta, indent=2))
    if progress:
        for kind in tests:
            b, a = before[kind], after[kind]
            if not a["n"]:
                continue
            print(f"reward model {rm.name}, held-out {kind} debates ({a['n']}): accuracy {b['accuracy']:.3f} "
                  f"[{b['low']:.2f}, {b['high']:.2f}] before -> {a['accuracy']:.3f} [{a['low']:.2f}, {a['high']:.2f}] after", flush=True)
    return folder, meta


def ensure_reward_model(cfg: TrainConfig, debater: Path, progress: bool = True,
                        ensure_init: Optional[Callable[[str], Path]] = None) -> tuple[Path, dict]:
    """The reward model's judge folder and its reward_model.json, trained once and then read from the cache.

    `ensure_init(name) -> model folder` makes the initial judge when it is missing (arenas.tournament's
    ensure_model, passed in by the caller, since judges/ must not import arenas/); without it a missing
    initial judge is an error naming the command that trains it."""
    folder = judge_dir(cfg.reward_model.name)
    meta_path = folder / "reward_model.json"
    if meta_path.exists() and (folder / "model" / "config.json").exists():
        meta = json.loads(meta_path.read_text())
        now = {"reward_model": asdict(cfg.reward_model), "debater": str(debater)}
        check_cached("reward model", folder, {k: meta.get(k) for k in now}, now, "reward_model.name", ADDED_SETTINGS)
        return folder, meta
    return train_reward_model(cfg, debater, progress, ensure_init)
