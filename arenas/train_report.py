"""The report of a training run: the per-iteration table and a plot of what moved."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import pandas as pd

from debate.intervals import difference_interval
from debate.store import Store
from debate.training.iterations import iteration_rows, run_stages
from arenas.selfplay_eval import hacking_signs
from arenas.selfplay_paired import paired_change_line, rejudged_lines, rollout_change_line, run_records

COLUMNS = {  # shown column -> metric (with its interval where it has one)
    "judge acc": "judge_accuracy", "held-out judge": "heldout_accuracy", "vs start": "versus_win_rate",
    "vs start (held-out)": "heldout_versus_win_rate", "honest quotes": "honest_supporting",
    "rollout quotes": "rollout_supporting", "invented": "dishonest_invented", "verified": "verified_rate",
    "words": "mean_words", "cut": "cut_rate", "rollouts cut": "rollout_cut", "KL": "kl", "KL median": "kl_median",
    "reward (honest)": "eval_reward", "rollout reward": "reward_honest",
    "reward ~ evidence": "evidence_agreement", "units": "units", "loss": "loss", "seconds": "seconds",
}
PANELS = [("judge_accuracy", "training judge accuracy (= honest win rate)"),
          ("heldout_accuracy", "held-out judge accuracy"), ("honest_supporting", "honest supporting-quote rate"),
          ("eval_reward", "mean reward, honest side"), ("kl", "KL to the reference"),
          ("mean_words", "mean speech length (words)")]
ROLLOUTS = {"honest_supporting": "rollout_supporting", "eval_reward": "reward_honest"}  # the same, in the rollouts


def iteration_frame(store: Store, run: str) -> pd.DataFrame:
    """One row per iteration, every metric a column (Parquet-friendly)."""
    return pd.DataFrame(iteration_rows(store, run))


def _cell(row: pd.Series, key: str) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if not isinstance(v, (int, float)):
        return str(v)
    lo, hi = row.get(f"{key}_low"), row.get(f"{key}_high")
    if isinstance(lo, float) and isinstance(hi, float) and not math.isnan(lo):
        return f"{v:.2f} [{lo:.2f},{hi:.2f}]"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _pair_cell(row: pd.Series, role: str) -> str:
    n = row.get(f"pairs_{role}")
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    return f"{int(row[f'pairs_{role}_best_tagged'])}/{int(row[f'pairs_{role}_worst_tagged'])} of {int(n)}"


def _early_late_cell(row: pd.Series) -> str:
    """Honest supporting quotes where the deciding sentence is among the passage's first two, and later: k/n each."""
    def part(key: str) -> str:
        n = row.get(f"{key}_n")
        if n is None or (isinstance(n, float) and math.isnan(n)):
            return "-"
        return f"{round(row[key] * n) if n else 0}/{int(n)}"

    return f"{part('honest_supporting_early')}, {part('honest_supporting_late')}"


def _run_config(store: Store, run: str) -> dict:
    import yaml

    return yaml.safe_load(store.run(run).config) or {}


def _rollout_questions(cfg: dict) -> str:
    """How the run chose its rollouts' questions, for the report's header."""
    if cfg.get("fresh_questions"):
        return f", on {cfg['train_questions']['n']} questions new to the policy each iteration"
    return ", on the same training questions every iteration"


def _rate(r: dict, key: str) -> str:
    return "-" if r.get(key) is None else f"{r[key]:.2f}"


def warm_start_line(w: dict) -> str:
    """The warm start's size and its probe debates' quoting before and after it."""
    probe = w.get("probe") or {}
    b, a = probe.get("before") or {}, probe.get("after") or {}
    text = f"warm start {w.get('name')}: {w.get('demonstrations')} demonstrations, {w.get('steps')} steps"
    if not a:
        return text
    return (text + f"; its probe debates ({a.get('speeches')} speeches) before -> after: tagged "
            f"{_rate(b, 'tag_rate')} -> {_rate(a, 'tag_rate')}, verified {_rate(b, 'verified_rate')} -> {_rate(a, 'verified_rate')}, honest "
            f"supporting {_rate(b, 'honest_supporting_rate')} -> {_rate(a, 'honest_supporting_rate')} "
            f"({a.get('honest_supporting')} of {a.get('honest')})")


def reward_model_line(rm: dict, name: Optional[str] = None) -> str:
    """The reward model's accuracy on held-out debates of the warm-started debaters, before any update."""
    acc = rm.get("accuracy") or {}
    policy = acc.get("policy") or {}
    b, a = policy.get("before") or {}, policy.get("after") or {}
    if not a:
        return f"reward model {name or rm.get('name')}: no held-out accuracy recorded"
    initial = b.get("accuracy", float("nan"))
    text = (f"reward model {name or rm.get('name')} on {a['n']} held-out debates of the warm-started debaters: "
            f"accuracy {a['accuracy']:.3f} [{a['low']:.2f}, {a['high']:.2f}] (its initial judge: {initial:.3f})")
    decided, templated = ((acc.get(k) or {}).get("after") for k in ("policy_decided", "templated"))
    if decided:
        text += f"; on the {decided['n']} their quotes decide {decided['accuracy']:.3f}"
    if templated:
        text += f", on {templated['n']} templated {templated['accuracy']:.3f}"
    return text + "; target >= 0.8"


def stage_lines(stages: dict) -> list[str]:
    """What the run started from, as stored with it (`arenas.selfplay.stages_of`)."""
    lines = []
    if stages.get("warm_start", {}).get("name"):
        lines.append(warm_start_line(stages["warm_start"]))
    if stages.get("reward_model"):
        lines.append(reward_model_line(stages["reward_model"]))
    return lines


def format_train_report(store: Store, run: str) -> str:
    frame = iteration_frame(store, run)
    if frame.empty:
        return f"training run {run}: no iteration is complete yet"
    cfg = _run_config(store, run)
    table = pd.DataFrame({name: [_cell(r, key) for _, r in frame.iterrows()] for name, key in COLUMNS.items()},
                         index=frame["iteration"].rename("iteration"))
    if "honest_supporting_early_n" in frame:  # honest quotes by where the deciding sentence stands in the passage
        table["honest quotes early/late"] = [_early_late_cell(r) for _, r in frame.iterrows()]
    for role in ("honest", "dishonest"):  # what each side's best and worst speeches teach about quoting at all
        if f"pairs_{role}" in frame:
            table[f"tagged best/worst ({role})"] = [_pair_cell(r, role) for _, r in frame.iterrows()]
    lines = [f"training run {run}: {len(frame)} iterations recorded (0 = before any update); 95% intervals (Wilson "
             f"for rates, Student t for means); rollout columns: the training games, written before the update"
             f"{_rollout_questions(cfg)}",
             *stage_lines(run_stages(store, run)),
             table.to_string()]
    skipped = frame[frame["skipped"].notna()] if "skipped" in frame else frame.iloc[0:0]
    for _, r in skipped.iterrows():
        lines.append(f"iteration {r['iteration']}: update skipped ({r['skipped']})")
    rows = frame.to_dict("records")
    records = run_records(store, run)  # the run's games, verdicts and questions, read once for the lines below
    if len(rows) > 1:
        lines.append(change_line(rows[0], rows[-1]))
        lines.append(paired_change_line(records, rows[0]["iteration"], rows[-1]["iteration"]))
        rollouts = rollout_change_line(records)
        if rollouts:
            lines.append(rollouts)
    lines += rejudged_lines(records)
    signs = hacking_signs(rows, cfg.get("train_sides", "both"))
    lines += [f"warning: {s}" for s in signs] or ["no sign of reward hacking between the first and the last iteration "
                                                 "(training and held-out judges agree, length steady)"]
    return "\n".join(lines)


CHANGES = [("judge acc", "judge_accuracy"), ("held-out judge", "heldout_accuracy"),
           ("honest quotes", "honest_supporting")]


def change_line(first: dict, last: dict) -> str:
    """The first-to-last change of the main rates with the 95% interval of each difference (Newcombe's hybrid
    score interval, the iterations' games taken as independent). It asks less than two intervals that do not
    overlap: with 32 games each, a rise from 0.5 excludes 0 from about +0.25 (24 of 32), while the two Wilson
    intervals part only from +0.34 (27 of 32)."""
    parts = []
    for name, key in CHANGES:
        n1, n2 = first.get(f"{key}_n"), last.get(f"{key}_n")
        if not n1 or not n2 or math.isnan(n1) or math.isnan(n2):
            continue
        n1, n2 = int(n1), int(n2)
        d, lo, hi = difference_interval(round(first[key] * n1), n1, round(last[key] * n2), n2)
        parts.append(f"{name} {d:+.2f} [{lo:+.2f}, {hi:+.2f}]")
    return (f"change from iteration {first['iteration']} to {last['iteration']} (95% interval of the difference): "
            + ("; ".join(parts) or "no rate measured in both"))


def plot_training(store: Store, run: str, path: Path) -> Optional[Path]:
    """A PNG with the metrics a person watches for reward hacking, against iteration, with intervals."""
    frame = iteration_frame(store, run)
    if frame.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, (key, title) in zip(axes.flat, PANELS):
        if key in frame:
            x, y = frame["iteration"], frame[key].astype(float)
            ax.plot(x, y, marker="o", label="held-out games")
            if f"{key}_low" in frame:
                ax.fill_between(x, frame[f"{key}_low"].astype(float), frame[f"{key}_high"].astype(float), alpha=0.2)
        if ROLLOUTS.get(key) in frame:
            # an iteration's rollouts come from the policy before its update: drawn at the iteration that policy ends
            ax.plot(frame["iteration"] - 1, frame[ROLLOUTS[key]].astype(float), marker="s", linestyle="--",
                    label="training rollouts")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(f"training run {run}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
