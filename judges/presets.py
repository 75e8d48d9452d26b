"""Built-in judge training presets (YAML files in judges/presets/) and config loading."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from debate.configs import ConfigError, apply_override, build, parse_value, read_yaml
from judges.train import JudgeTrainConfig

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def train_config(config: Optional[str], preset: Optional[str], overrides: Sequence[str] = ()) -> JudgeTrainConfig:
    """A judge training config from a file or a preset (default: embedded), with KEY=VALUE overrides."""
    if config and preset:
        raise ConfigError("give either --config or --preset, not both")
    if config:
        data, source = read_yaml(config), config
    else:
        name = preset or "embedded"
        path = PRESET_DIR / f"{name}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown judge preset {name!r}; known: {', '.join(preset_names())}")
        data, source = read_yaml(path), f"judge preset {name}"
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set epochs=1")
        key, value = item.split("=", 1)
        apply_override(data, key, parse_value(value))
    try:
        return build(JudgeTrainConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
