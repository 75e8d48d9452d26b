"""`debate judge eval`: a judge's held-out accuracy, calibration and position bias by kind of debate,
and rows for what it can be fooled by."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from arenas.judging import judge_cases
from arenas.metrics import accuracy, brier, ece, first_position_preference, position_bias
from debate.configs import ConfigError
from debate.prompts import load_prompts
from debate.records import Transcript, from_dict
from judges.judge_data import DEBATE, Example, blind, from_transcripts, templated
from judges.model_judge import ModelJudge


def _row(name: str, examples: Sequence[Example], verdicts: Sequence[Any]) -> dict:
    ok = [(ex, v) for ex, v in zip(examples, verdicts) if v.p_answer0 is not None]
    p = [v.p_correct(ex.label) for ex, v in ok]
    orders = [tuple(v.p_orders) for _, v in ok if len(v.p_orders) == 2]
    a = accuracy(p) if p else None
    nan = math.nan
    return dict(
        slice=name, n=len(ok), failed=len(examples) - len(ok),
        accuracy=a.value if a else nan, low=a.low if a else nan, high=a.high if a else nan,
        brier=brier(p) if p else nan, ece=ece(p) if p else nan,
        position_bias=position_bias(orders) if orders else nan,
        first_shown_pref=first_position_preference(orders) if orders else nan,
    )


def evaluate(judge: ModelJudge, sets: dict[str, list[Example]], progress: bool = False) -> pd.DataFrame:
    """Rows per kind of debate, then probe rows slicing the templated and generated debates."""
    rows = []
    results: dict[str, list] = {}
    for kind, examples in sets.items():
        results[kind] = judge_cases(judge, [ex.case for ex in examples], progress=progress)
        rows.append(_row(kind, examples, results[kind]))
    probes = [
        ("templated: dishonest quotes a verified sentence about the wrong object", "templated", lambda e: e.trick == "wrong-object"),
        ("templated: dishonest invents a quote (unverified)", "templated", lambda e: e.trick == "invented"),
        ("templated: dishonest speech longer", "templated", lambda e: not e.honest_longer),
        ("templated: honest speech longer", "templated", lambda e: e.honest_longer),
        ("templated: honest speaks first", "templated", lambda e: e.honest_first),
        ("templated: honest speaks second", "templated", lambda e: not e.honest_first),
        ("generated: dishonest speech longer", "generated", lambda e: not e.honest_longer),
        ("generated: honest speaks first", "generated", lambda e: e.honest_first),
        ("generated: honest speaks second", "generated", lambda e: not e.honest_first),
    ]
    for name, kind, keep in probes:
        if kind not in sets:
            continue
        pairs = [(ex, v) for ex, v in zip(sets[kind], results[kind]) if keep(ex)]
        if pairs:
            rows.append(_row(name, [p[0] for p in pairs], [p[1] for p in pairs]))
    return pd.DataFrame(rows)


def generated_test_set(folder: Path, cfg: Any, questions: list, progress: bool) -> list[Example]:
    """Debates by the base model's debaters on the held-out questions; generated once, then read from
    `test_generated.jsonl` in the judge's folder, so every evaluation judges the same debates."""
    from debate.actors import LocalPolicy, PolicyServer
    from debate.backends.hf import TransformersBackend
    from debate.configs import PolicyConfig
    from debate.embedded import resolve_model
    from debate.records import to_dict
    from judges.judge_data import generate_debates

    path = folder / "test_generated.jsonl"
    if not path.exists():
        base = TransformersBackend(resolve_model(cfg.base_model), device=cfg.device, name="debater")
        policy = LocalPolicy(PolicyServer(PolicyConfig("debater", model=cfg.base_model), backend=base))
        made = generate_debates(questions, policy, cfg.debater_max_new_tokens, cfg.seed + 1, progress)
        path.write_text("".join(json.dumps(to_dict(ex.case.transcript)) + "\n" for ex in made))
    ts = [from_dict(Transcript, json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return from_transcripts(ts, {q.id: q for q in questions}, DEBATE)


def test_sets(folder: Path, meta: dict, progress: bool = False, templated_questions: int = 0) -> dict[str, list[Example]]:
    """The held-out sets of a trained judge: templated, debater-generated and blind.

    `templated_questions` (0: the judge's own `test_questions`) sizes the templated and blind sets; more questions
    of the same test seed narrow the intervals (the first `test_questions` are the usual ones, and a larger set can
    take in the questions of the generated debates: all are held out). The generated set stays as stored."""
    from dataclasses import replace

    from judges.train import JudgeTrainConfig, split_questions

    if templated_questions < 0:
        raise ConfigError(f"judge eval --templated: {templated_questions} is negative; give a number of questions, or 0 for the judge's own")
    cfg = JudgeTrainConfig(**meta["config"])
    test_q = split_questions(cfg)["test"]
    generated = generated_test_set(folder, cfg, test_q[cfg.test_questions :], progress) if cfg.generated_test else []
    n = templated_questions or cfg.test_questions
    if n > len(test_q):
        test_q = split_questions(replace(cfg, test_questions=n, generated_test=0))["test"]
    out = {"templated": templated(test_q[:n], cfg.seed)}
    if generated:
        out["generated"] = generated
    out["blind"] = blind(test_q[:n])
    return out


def evaluate_trained(name_or_folder: str, compare_base: bool = False, progress: bool = True, templated_questions: int = 0) -> pd.DataFrame:
    """Evaluate a stored judge (and optionally its base model) on its held-out sets."""
    from debate.actors import LocalPolicy, PolicyServer
    from debate.backends.hf import TransformersBackend
    from debate.configs import PolicyConfig
    from debate.embedded import judge_dir, resolve_model

    folder = Path(name_or_folder) if Path(name_or_folder).is_dir() else judge_dir(name_or_folder)
    if not (folder / "judge.json").exists():
        raise FileNotFoundError(f"no trained judge at {folder}; train one with `debate judge train --preset embedded`")
    meta = json.loads((folder / "judge.json").read_text())
    sets = test_sets(folder, meta, progress, templated_questions)
    models = [("trained", folder / "model")] + ([("base", resolve_model(meta["config"]["base_model"]))] if compare_base else [])
    frames = []
    for label, path in models:
        b = TransformersBackend(path, device=meta["config"].get("device", "auto"))
        policy = LocalPolicy(PolicyServer(PolicyConfig(label, model=str(path)), backend=b))
        judge = ModelJudge(f"{meta['name']}:{label}", policy, load_prompts("default"))
        df = evaluate(judge, sets, progress)
        df.insert(0, "judge", label)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(folder / "eval.csv", index=False)
    return table


def _layers(config: dict) -> str:
    top = config.get("train_layers", 0)
    return f" of the top {top} layers" if top and config.get("method") == "full" else ""


def format_eval(table: pd.DataFrame, meta: dict) -> str:
    seeds = meta["data"]["seeds"]
    head = (
        f"judge {meta['name']} (base {meta['config']['base_model']}, objective {meta['config']['objective']}, "
        f"{meta['config']['method']} fine-tune{_layers(meta['config'])})\nheld-out questions: seed {seeds['test']}; trained on seed {seeds['train']}, "
        f"validated on seed {seeds['validation']}: {meta['data']['disjoint']}\n"
        "kinds: templated (honest quotes the deciding sentence), generated (debates by the base model's debaters: "
        "the number that matters), blind (question and answers only; a sound judge is near 0.5)\n"
    )
    return head + table.to_string(index=False, float_format=lambda x: f"{x:.3f}")
