"""Frozen, validated configuration loaded from YAML (or presets) and overridden from the command line."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message names the file or field and the fix."""


JUDGE_KINDS = ("model", "human")
JUDGE_MODES = ("logprob", "text")
OVERFLOW = ("truncate", "refuse")


def _choice(value: str, known: tuple[str, ...], where: str) -> None:
    if value not in known:
        raise ConfigError(f"{where}: unknown value {value!r}; known: {', '.join(known)}")


@dataclass(frozen=True)
class PolicyConfig:
    """A model behind a backend, hosted by one Ray actor."""

    name: str
    model: str = "embedded"  # 'embedded' or a local Hugging Face model folder
    backend: str = "transformers"
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str = "auto"
    threads: int = 0  # torch threads in the actor; 0 = all cores
    max_batch: int = 32
    num_cpus: float = 1.0  # Ray resources of the actor
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        from debate.backends.registry import BACKENDS  # the registry is the one list of backends

        _choice(self.backend, tuple(BACKENDS), f"policies.{self.name}.backend")


@dataclass(frozen=True)
class EntryConfig:
    """A tournament entry: a policy plus its prompt style and sampling settings."""

    name: str
    policy: str
    prompt: str = "default"
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 96

    def __post_init__(self) -> None:
        from debate.prompts import debater_styles, load_prompts

        if self.temperature < 0:
            raise ConfigError(f"entries.{self.name}.temperature must be >= 0, got {self.temperature}")
        # checked at load, not mid-run after the models have loaded; the engine plays the default prompt set
        _choice(self.prompt, tuple(debater_styles(load_prompts("default"))), f"entries.{self.name}.prompt")


@dataclass(frozen=True)
class JudgeConfig:
    name: str = "judge"
    kind: str = "model"
    policy: str = "judge"
    mode: str = "logprob"  # logprob: answer-letter log-probabilities; text: parse generated text
    min_letter_mass: float = 1e-4  # below this the letters were not an answer: a recorded failure
    judges_per_debate: int = 1  # human judging: how many different people judge each debate
    reveal: bool = False  # human judging: show the correct answer after the verdict is submitted

    def __post_init__(self) -> None:
        _choice(self.kind, JUDGE_KINDS, "judge.kind")
        _choice(self.mode, JUDGE_MODES, "judge.mode")


@dataclass(frozen=True)
class ProtocolConfig:
    name: str
    rounds: int = 2
    word_limit: int = 60
    beliefs: bool = False  # ask the judge for a belief after each turn

    def __post_init__(self) -> None:
        from debate.protocols import PROTOCOLS

        _choice(self.name, tuple(PROTOCOLS), "protocols[].name")
        if self.rounds < 1 or self.word_limit < 1:
            raise ConfigError(f"protocol {self.name}: rounds and word_limit must be >= 1")


@dataclass(frozen=True)
class QuestionsConfig:
    source: str = "synthetic"  # synthetic, jsonl, quality, nyu
    path: Optional[str] = None
    n: int = 8
    seed: int = 0
    difficulty: str = "easy"
    split: Optional[str] = None


@dataclass(frozen=True)
class QuotesConfig:
    mode: str = "tags+recite"
    min_words: int = 5
    max_edit_ratio: float = 0.1


@dataclass(frozen=True)
class RayConfig:
    address: Optional[str] = None  # None: a local ray.init(); else a cluster address
    num_cpus: Optional[int] = None


@dataclass(frozen=True)
class TournamentConfig:
    name: str = "tournament"
    questions: QuestionsConfig = QuestionsConfig()
    policies: tuple[PolicyConfig, ...] = ()
    entries: tuple[EntryConfig, ...] = ()
    judge: JudgeConfig = JudgeConfig()
    protocols: tuple[ProtocolConfig, ...] = (ProtocolConfig("debate"), ProtocolConfig("blind"))
    quotes: QuotesConfig = QuotesConfig()
    ray: RayConfig = RayConfig()
    context_overflow: str = "truncate"  # a passage longer than the context: truncate (warned) or refuse
    samples: int = 1
    seed: int = 0
    results: str = "results"

    def __post_init__(self) -> None:
        _choice(self.context_overflow, OVERFLOW, "context_overflow")
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ConfigError(f"policies: duplicate names in {names}")
        for e in self.entries:
            if e.policy not in names:
                raise ConfigError(f"entries.{e.name}.policy: unknown policy {e.policy!r}; known: {', '.join(names)}")
        if self.judge.kind == "model" and self.judge.policy not in names:
            raise ConfigError(f"judge.policy: unknown policy {self.judge.policy!r}; known: {', '.join(names)}")
        debating = [p for p in self.protocols if p.name in ("debate", "simultaneous", "consultancy")]
        if debating and not self.entries:
            raise ConfigError("entries: a protocol with debaters needs at least one entry")
        if any(p.name in ("debate", "simultaneous") for p in debating) and len(self.entries) < 2:
            raise ConfigError("entries: a debate tournament needs at least two entries (round robin)")
        if len({e.name for e in self.entries}) != len(self.entries):
            raise ConfigError("entries: names must be unique")

    def policy(self, name: str) -> PolicyConfig:
        return next(p for p in self.policies if p.name == name)


def build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from plain data, naming the field path of any problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with fields {', '.join(f.name for f in dataclasses.fields(cls))}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _convert(hint, value, where)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is tuple:
        if isinstance(value, dict):  # a mapping of name -> fields, for named items
            value = [{"name": k, **(v or {})} for k, v in value.items()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, str):  # YAML 1.1 reads 3e-5 as a string; Python does not
        try:
            return hint(value.strip())
        except ValueError:
            pass
    if hint in (int, float, str, bool) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def parse_value(text: str) -> Any:
    """A command-line override value: a number as Python reads it (`3e-5`, `1_000`), else YAML (so true
    is a bool and [1, 2] a list)."""
    for number in (int, float):
        try:
            return number(text.strip())
        except ValueError:
            pass
    return yaml.safe_load(text)


def apply_overrides(data: dict, items: Sequence[str], example: str = "questions.n=4") -> dict:
    """Apply `--set KEY=VALUE` items to plain config data (nested keys dotted, list items by index)."""
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set {example}")
        key, value = item.split("=", 1)
        try:
            apply_override(data, key.strip(), parse_value(value))
        except (ValueError, IndexError, TypeError, AttributeError):
            raise ConfigError(f"--set {item!r}: {key!r} does not name a field here; use dotted names and list "
                              f"indexes, e.g. --set {example}") from None
    return data


def apply_override(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c=value` in nested plain data; list items by index (`protocols.0.rounds`)."""
    parts = dotted.split(".")
    node: Any = data
    for p in parts[:-1]:
        if isinstance(node, list):
            node = node[int(p)]
        else:
            node = node.setdefault(p, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def yaml_names(folder: Path) -> list[str]:
    """The names of the built-in YAML files in `folder` (arena presets, judge presets, specs, prompts)."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def named_yaml(folder: Path, name: str, what: str, files: bool = False) -> Path:
    """The built-in `folder/NAME.yaml`, or with `files` a YAML file's own path; an unknown name is an
    error that lists the known ones."""
    if files and (name.endswith((".yaml", ".yml")) or Path(name).is_file()):
        if not Path(name).is_file():
            raise ConfigError(f"{what} file {name} does not exist; give a YAML file or a built-in name: "
                              f"{', '.join(yaml_names(folder))}")
        return Path(name)
    path = folder / f"{name}.yaml"
    if not path.exists():
        hint = " (or a YAML file)" if files else ""
        raise ConfigError(f"unknown {what} {name!r}; known{hint}: {', '.join(yaml_names(folder))}")
    return path


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file does not exist; give a YAML file or use --preset")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config fields")
    return data


def load_tournament(data: dict, source: str = "config") -> TournamentConfig:
    try:
        return build(TournamentConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def dump(cfg: Any) -> str:
    return yaml.safe_dump(to_plain(cfg), sort_keys=False)


def to_plain(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_plain(v) for v in cfg]
    return cfg
