"""Re-judge stored transcripts with another judge: new verdict rows beside the originals."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from debate.configs import ConfigError, JudgeConfig, PolicyConfig, RayConfig, build, named_yaml, read_yaml
from arenas.judging import cases_to_judge, judge_cases
from debate.policy import Policy
from debate.prompts import load_prompts
from debate.store import Store
from judges.model_judge import ModelJudge

SPEC_DIR = Path(__file__).resolve().parents[1] / "judges" / "specs"  # package data of `judges`


def judge_spec(name_or_file: str) -> tuple[PolicyConfig, JudgeConfig]:
    """A judge spec: a YAML file with `policy` and `judge` sections, or a built-in name."""
    path = named_yaml(SPEC_DIR, name_or_file, "judge spec", files=True)
    data = read_yaml(path)
    unknown = set(data) - {"policy", "judge"}
    if unknown or "policy" not in data:
        raise ConfigError(f"{path}: a judge spec has the sections 'policy' and 'judge' (got {sorted(data)})")
    try:
        policy = build(PolicyConfig, data["policy"], "policy")
        judge = build(JudgeConfig, {"policy": policy.name, **(data.get("judge") or {})}, "judge")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return policy, judge


def rejudge(
    store: Store, run: str, spec: str, limit: Optional[int] = None, setting: Optional[str] = None,
    progress: bool = True, policy: Optional[Policy] = None, ray: RayConfig = RayConfig(), tag: Optional[str] = None,
) -> int:
    """Judge the run's complete transcripts (not verdict-only ones) that this judge has not judged yet,
    under the protocols the run's stored config played (rounds, word limit, beliefs); `setting` and `tag`
    keep only the transcripts of that setting or with that tag (a training run's held-out games: `self`)."""
    policy_cfg, judge_cfg = judge_spec(spec)
    store.run(run)
    cases = cases_to_judge(store, run, judge_cfg.name, keep=lambda t: (setting is None or t.setting == setting)
                           and (tag is None or tag in t.tags))
    cases = cases[:limit] if limit is not None else cases
    if not cases:
        return 0
    if policy is None:
        from arenas.tournament import ensure_model
        from debate.actors import start_policies

        ensure_model(policy_cfg.model, progress)
        policy = start_policies([policy_cfg], ray)[policy_cfg.name]
    judge = ModelJudge(judge_cfg.name, policy, load_prompts("default"), judge_cfg.mode, judge_cfg.min_letter_mass)
    judge_cases(judge, cases, store, progress)
    return len(cases)
