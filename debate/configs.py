"""Frozen, validated configuration loaded from YAML (or presets) and overridden from the command line."""

from __future__ import annotations

import dataclasses
import functools
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Sequence, TypeVar

import pydantic.dataclasses
import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, StrictBool, TypeAdapter, ValidationError, model_validator
from pydantic_core import ArgsKwargs


class ConfigError(ValueError):
    """A configuration problem; the message names the file or field and the fix."""


# -- field types: each declares its type, range or choices once; pydantic checks them on construction


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic's lax mode reads True as 1
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _one_of(known: Callable[[], Sequence[str]]) -> AfterValidator:
    """A choice among names a registry holds, read when a value is checked (the registries import configs)."""

    def check(value: str) -> str:
        names = list(known())
        if value not in names:
            raise ValueError(f"unknown value {value!r}; known: {', '.join(names)}")
        return value

    return AfterValidator(check)


def _named_items(value: Any) -> Any:
    if isinstance(value, dict):  # a mapping of name -> fields, for named items
        return [{"name": k, **(v or {})} for k, v in value.items()]
    return value


def _backends() -> list[str]:
    from debate.backends.registry import BACKENDS

    return list(BACKENDS)


def _protocols() -> list[str]:
    from debate.protocols import PROTOCOLS

    return list(PROTOCOLS)


def _debater_styles() -> list[str]:
    from debate.prompts import debater_styles, load_prompts

    return debater_styles(load_prompts("default"))  # the engine plays the default prompt set


def _question_sources() -> list[str]:
    from debate.questions import SOURCES

    return list(SOURCES)


def _quote_modes() -> list[str]:
    from debate.quotes import QUOTE_MODES

    return list(QUOTE_MODES)


def yaml_switch(value: Any) -> Any:
    """YAML 1.1 reads an unquoted on or off (yes, no) as a boolean; a field whose choices are words takes it
    back as 'on' or 'off'."""
    return ("on" if value else "off") if isinstance(value, bool) else value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]  # an int is taken; YAML 1.1's string '3e-5' too
_Item = TypeVar("_Item")
Named = Annotated[tuple[_Item, ...], BeforeValidator(_named_items)]  # a list, or a mapping name -> fields


class _Fields:
    """Refuses an unknown field by name, listing the known ones (pydantic's own error does not list them)."""

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        given = (data.kwargs or {}) if isinstance(data, ArgsKwargs) else data if isinstance(data, dict) else {}
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in given if k not in known]
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}; known: {', '.join(known)}")
        return data


_Cls = TypeVar("_Cls", bound=type)


def _config(cls: _Cls) -> _Cls:
    """A frozen pydantic dataclass whose construction errors, in Python as from YAML, are ConfigErrors."""
    cls = pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls)
    validated_init = cls.__init__

    @functools.wraps(validated_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validated_init(self, *args, **kwargs)
        except ValidationError as exc:
            raise config_error(exc, cls.__name__) from None

    cls.__init__ = __init__
    return cls


def _ray_resources(value: Any) -> Any:
    """Custom Ray resources as Ray takes them: resource name -> amount. `{gpu-a: 1}` places the actor on a
    node started with `ray start --resources '{"gpu-a": 1}'` and holds one unit of it while the actor lives."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of Ray resource name -> amount, e.g. {{gpu-a: 1}}; got {value!r}")
    for name, amount in value.items():
        if name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ValueError(f"{name!r} is not a custom resource: set it with num_cpus / num_gpus")
        if isinstance(amount, str):
            raise ValueError(f"{name}: {amount!r} is not an amount; name the node's resource as the key: {{{amount}: 1}} "
                             f"for a node started with `ray start --resources '{{\"{amount}\": 1}}'`")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
            raise ValueError(f"{name}: the amount must be a positive number, got {amount!r}")
    return {str(k): float(v) for k, v in value.items()}


@_config
class PolicyConfig(_Fields):
    """A model behind a backend, hosted by one Ray actor."""

    name: str
    model: str = "embedded"  # 'embedded' or a local Hugging Face model folder
    backend: Annotated[str, _one_of(_backends)] = "transformers"  # the registry is the one list of backends
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str = "auto"
    threads: Annotated[Int, Field(ge=0)] = 0  # torch threads in the actor; 0 = all cores
    max_batch: Annotated[Int, Field(ge=1)] = 32
    num_cpus: Annotated[Float, Field(ge=0)] = 1.0  # Ray resources of the actor
    num_gpus: Annotated[Float, Field(ge=0)] = 0.0
    resources: Annotated[dict, BeforeValidator(_ray_resources)] = Field(default_factory=dict)  # custom Ray resources: {gpu-a: 1}
    max_restarts: Annotated[Int, Field(ge=-1)] = 1  # Ray restarts the actor this often after its process dies (-1: always)
    max_task_retries: Annotated[Int, Field(ge=-1)] = 1  # a call the dead actor was serving is re-run on the restarted one
    # backend: openai only (`model` is then the server's model name); see debate/backends/openai_backend.py
    base_url: Optional[str] = None  # the server's OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1
    api_key_env: Optional[str] = None  # the NAME of the environment variable holding the API key (never the key)
    concurrency: Annotated[Int, Field(ge=1)] = 8  # requests in flight at once
    timeout: Annotated[Float, Field(gt=0)] = 120.0  # seconds per request attempt
    max_retries: Annotated[Int, Field(ge=0)] = 2  # the openai client's own retries, with back-off, on 429, 5xx, connection errors
    continue_prefix: StrictBool = True  # judge scoring continues the answer prefix (vLLM); false for plain APIs, transformers serve
    tokenizer: Optional[str] = None  # a local tokenizer ('embedded' or a model folder) to count tokens; else a chars/3 estimate
    context_length: Optional[Annotated[Int, Field(ge=64)]] = None  # the server model's context in tokens; unset: 4096
    max_lora_rank: Annotated[Int, Field(ge=0)] = 0  # backend vllm: serve LoRA adapters up to this rank (set_adapter); 0: none

    @model_validator(mode="after")
    def _backend_fields(self) -> PolicyConfig:
        from debate.backends.openai_backend import check_openai_fields

        check_openai_fields(self)
        if self.max_lora_rank and self.backend != "vllm":
            raise ValueError(f"policy {self.name!r}: max_lora_rank is for backend vllm (adapters handed to a running "
                             f"engine); this policy's backend is {self.backend}: remove it, or set backend: vllm")
        return self


@_config
class EntryConfig(_Fields):
    """A tournament entry: a policy plus its prompt style and sampling settings."""

    name: str
    policy: str
    prompt: Annotated[str, _one_of(_debater_styles)] = "default"  # checked at load, not mid-run after models load
    temperature: Annotated[Float, Field(ge=0)] = 0.7
    top_p: Annotated[Float, Field(gt=0, le=1)] = 0.95
    max_new_tokens: Annotated[Int, Field(ge=1)] = 96


@_config
class JudgeConfig(_Fields):
    name: str = "judge"
    kind: Literal["model", "human"] = "model"
    policy: str = "judge"
    mode: Literal["logprob", "text"] = "logprob"  # logprob: answer-letter log-probabilities; text: parse generated text
    min_letter_mass: Annotated[Float, Field(ge=0, lt=1)] = 1e-4  # below this the letters were not an answer: a recorded failure
    judges_per_debate: Annotated[Int, Field(ge=1)] = 1  # human judging: how many different people judge each debate
    reveal: StrictBool = False  # human judging: show the correct answer after the verdict is submitted


@_config
class ProtocolConfig(_Fields):
    name: Annotated[str, _one_of(_protocols)]
    rounds: Annotated[Int, Field(ge=1)] = 2
    word_limit: Annotated[Int, Field(ge=1)] = 60
    beliefs: StrictBool = False  # ask the judge for a belief after each turn


@_config
class QuestionsConfig(_Fields):
    source: Annotated[str, _one_of(_question_sources)] = "synthetic"
    path: Optional[str] = None
    n: Annotated[Int, Field(ge=1)] = 8
    seed: Int = 0
    difficulty: str = "easy"  # checked by the synthetic generator, which also takes its own names (d3f2)
    split: Optional[str] = None


@_config
class QuotesConfig(_Fields):
    mode: Annotated[str, _one_of(_quote_modes)] = "tags+recite"
    min_words: Annotated[Int, Field(ge=1)] = 5
    max_edit_ratio: Annotated[Float, Field(ge=0, le=1)] = 0.1


@_config
class RayConfig(_Fields):
    address: Optional[str] = None  # None: a local ray.init(); else a cluster address
    num_cpus: Optional[Annotated[Int, Field(ge=1)]] = None


@_config
class TournamentConfig(_Fields):
    name: str = "tournament"
    questions: QuestionsConfig = QuestionsConfig()
    policies: Named[PolicyConfig] = ()
    entries: Named[EntryConfig] = ()
    judge: JudgeConfig = JudgeConfig()
    protocols: Named[ProtocolConfig] = (ProtocolConfig("debate"), ProtocolConfig("blind"))
    quotes: QuotesConfig = QuotesConfig()
    ray: RayConfig = RayConfig()
    context_overflow: Literal["truncate", "refuse"] = "truncate"  # a passage longer than the context: truncate (warned) or refuse
    samples: Annotated[Int, Field(ge=1)] = 1
    seed: Int = 0
    results: str = "results"

    @model_validator(mode="after")
    def _cross_references(self) -> TournamentConfig:
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError(f"policies: duplicate names in {names}")
        for e in self.entries:
            if e.policy not in names:
                raise ValueError(f"entries.{e.name}.policy: unknown policy {e.policy!r}; known: {', '.join(names)}")
        if self.judge.kind == "model" and self.judge.policy not in names:
            raise ValueError(f"judge.policy: unknown policy {self.judge.policy!r}; known: {', '.join(names)}")
        debating = [p for p in self.protocols if p.name in ("debate", "simultaneous", "consultancy")]
        if debating and not self.entries:
            raise ValueError("entries: a protocol with debaters needs at least one entry")
        if any(p.name in ("debate", "simultaneous") for p in debating) and len(self.entries) < 2:
            raise ValueError("entries: a debate tournament needs at least two entries (round robin)")
        if len({e.name for e in self.entries}) != len(self.entries):
            raise ValueError("entries: names must be unique")
        return self

    def policy(self, name: str) -> PolicyConfig:
        return next(p for p in self.policies if p.name == name)


def _path(where: str, loc: Sequence[Any]) -> str:
    path = where
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def config_error(exc: ValidationError, where: str = "") -> ConfigError:
    """Pydantic's first error as a ConfigError: the field path, the problem, the known values of a choice."""
    err = exc.errors()[0]
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "value_error":  # a validator's own message (choices, cross-field checks, __post_init__)
        msg = str(ctx["error"])
    elif kind == "literal_error":
        msg = f"unknown value {err['input']!r}; known: {ctx['expected']}"
    else:  # pydantic's own message: the type or the bound, and the value given
        msg = f"{err['msg'][0].lower()}{err['msg'][1:]}"
        msg += f" ({err['input']!r})" if " got " in msg else f", got {err['input']!r}"
    path = _path(where, err["loc"])
    return ConfigError(f"{path}: {msg}" if path else msg)


def build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from plain data, naming the field path of any problem. A plain (not pydantic)
    dataclass is validated by pydantic too, its unknown fields and booleans-as-numbers refused here."""
    if not pydantic.dataclasses.is_pydantic_dataclass(cls) and isinstance(data, dict):
        known = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for name, value in data.items():
            if name not in known:
                raise ConfigError(f"{where + ': ' if where else ''}unknown field {name!r}; known: {', '.join(known)}")
            if hints[name] in (int, float) and isinstance(value, bool):
                raise ConfigError(f"{_path(where, [name])}: expected a number, got {value!r}")
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as exc:
        raise config_error(exc, where) from None


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


def load_config(cls: type, folder: Path, config: Optional[str], preset: Optional[str], default: str, what: str,
                overrides: Sequence[str] = (), example: str = "epochs=1") -> Any:
    """A config of type `cls` from a YAML file or a built-in preset in `folder` (default: `default`), with
    KEY=VALUE overrides; errors name the file or preset and the field."""
    if config and preset:
        raise ConfigError("give either --config or --preset, not both")
    if config:
        data, source = read_yaml(config), config
    else:
        name = preset or default
        data, source = read_yaml(named_yaml(folder, name, what)), f"{what} {name}"
    apply_overrides(data, overrides, example=example)
    try:
        return build(cls, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def expected_line(path: Path) -> str:
    """What a preset is expected to take, from the `# expected:` line its file declares."""
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("# expected:"):
            return line.split(":", 1)[1].strip()
    return "time not measured for this preset"


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
