"""Re-judge stored transcripts with another judge: new verdict rows beside the originals."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from debate.configs import ConfigError, JudgeConfig, PolicyConfig, RayConfig, build, read_yaml
from debate.prompts import load_prompts
from debate.protocols import get_protocol
from debate.store import Store
from judges.base import Case
from judges.model_judge import ModelJudge

SPEC_DIR = Path(__file__).resolve().parents[1] / "judges" / "specs"


def judge_spec(name_or_file: str) -> tuple[PolicyConfig, JudgeConfig]:
    """A judge spec: a YAML file with `policy` and `judge` sections, or a built-in name."""
    path = Path(name_or_file)
    if not path.exists():
        path = SPEC_DIR / f"{name_or_file}.yaml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in SPEC_DIR.glob("*.yaml")))
            raise ConfigError(f"judge {name_or_file!r} is neither a YAML file nor a built-in judge; known: {known}")
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
    progress: bool = True, policy: Any = None, ray: RayConfig = RayConfig(),
) -> int:
    """Judge the run's complete transcripts (not verdict-only ones) that this judge has not judged yet."""
    policy_cfg, judge_cfg = judge_spec(spec)
    store.run(run)
    questions = store.questions(run)
    done = {v.transcript_id for v in store.verdicts(run, judge=judge_cfg.name)}
    todo = [
        t for t in store.transcripts(run, status="complete")
        if "verdict_only" not in t.tags and t.id not in done and (setting is None or t.setting == setting)
    ]
    todo = todo[:limit] if limit is not None else todo
    if not todo:
        return 0
    if policy is None:
        from arenas.tournament import ensure_model
        from debate.actors import start_policies

        ensure_model(policy_cfg.model, progress)
        policy = start_policies([policy_cfg], ray)[policy_cfg.name]
    judge = ModelJudge(judge_cfg.name, policy, load_prompts("default"), judge_cfg.mode, judge_cfg.min_letter_mass)
    cases = [Case(t, questions[t.question_id], get_protocol(t.protocol)) for t in todo]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(cases), desc=f"judging ({judge.name})", unit="debate", disable=not progress, dynamic_ncols=True)
    for k in range(0, len(cases), 8):  # stored as they come: a kill loses at most one batch
        chunk = cases[k : k + 8]
        store.add_verdicts(judge.judge(chunk))
        bar.update(len(chunk))
    bar.close()
    return len(cases)
