"""Who made a folder of the debater cache ($DEBATE_CACHE/debaters/NAME), so that nothing overwrites another's.

Warm starts and training runs share one namespace (both play as `debater:NAME`): a warm start writes
debater.json beside its model, a training run's final policy writes run.json (its run name and results
folder). A run may only store its policy where nothing is, or where its own earlier attempt stored it
(a resume); a warm start is only read from a folder a warm start made.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from debate.configs import ConfigError
from debate.embedded import debater_dir

RUN_FILE = "run.json"
WARM_START_FILE = "debater.json"


@dataclass(frozen=True)
class Owner:
    kind: str  # free, warm start, run, unknown (a model with no record: a run's policy stored before run.json)
    run: Optional[str] = None
    results: Optional[str] = None

    def describe(self) -> str:
        if self.kind == "run":
            return f"the final policy of training run {self.run!r} (results {self.results})"
        if self.kind == "warm start":
            return "a warm-started debater"
        return "a model with no record of what made it (a training run's policy stored before runs recorded it)"


def debater_owner(name: str) -> Owner:
    folder = debater_dir(name)
    if (folder / WARM_START_FILE).exists():
        return Owner("warm start")
    if (folder / RUN_FILE).exists():
        meta = json.loads((folder / RUN_FILE).read_text())
        return Owner("run", meta.get("run"), meta.get("results"))
    if (folder / "model").exists():
        return Owner("unknown")
    return Owner("free")


def _results_key(results: str | Path) -> str:
    return str(Path(results).expanduser().resolve())


def check_run_debater(run: str, results: str | Path, warm_start: str) -> None:
    """Refuse, before any work, a run whose final policy would replace another's in the debater cache, or the
    warm start (`warm_start.name`) it is about to train from, which may not be in the cache yet."""
    if run == warm_start:
        raise ConfigError(f"run name {run!r} is the warm start's name (warm_start.name); the run's final policy would "
                          f"replace the warm-started debater; choose another --run")
    owner = debater_owner(run)
    if owner.kind == "free" or (owner.kind == "run" and owner.run == run
                                and owner.results == _results_key(results)):
        return
    raise ConfigError(f"run name {run!r}: {debater_dir(run)} already holds {owner.describe()}, and this run's "
                      f"final policy would replace it (both play as `debater:{run}`); choose another --run, or "
                      f"remove it with `debate cache rm debater:{run}`")


def check_warm_start_folder(name: str) -> None:
    """Refuse to read a training run's policy as the warm start `name`."""
    owner = debater_owner(name)
    if owner.kind not in ("free", "warm start"):
        raise ConfigError(f"warm_start.name {name!r}: {debater_dir(name)} holds {owner.describe()}, not a warm "
                          f"start; set warm_start.name to another name, or remove it with "
                          f"`debate cache rm debater:{name}`")


def record_run_debater(run: str, results: str | Path, extra: Optional[dict] = None) -> None:
    """Mark debaters/RUN as this run's final policy (written after the model is exported)."""
    meta = {"run": run, "results": _results_key(results), "created": time.time(), **(extra or {})}
    (debater_dir(run) / RUN_FILE).write_text(json.dumps(meta, indent=2))
