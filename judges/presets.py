"""Built-in judge training presets (YAML files in judges/presets/) and config loading."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from debate.configs import ConfigError, apply_overrides, build, named_yaml, read_yaml, yaml_names
from judges.train import JudgeTrainConfig

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return yaml_names(PRESET_DIR)


def train_config(config: Optional[str], preset: Optional[str], overrides: Sequence[str] = ()) -> JudgeTrainConfig:
    """A judge training config from a file or a preset (default: embedded), with KEY=VALUE overrides."""
    if config and preset:
        raise ConfigError("give either --config or --preset, not both")
    if config:
        data, source = read_yaml(config), config
    else:
        name = preset or "embedded"
        data, source = read_yaml(named_yaml(PRESET_DIR, name, "judge preset")), f"judge preset {name}"
    apply_overrides(data, overrides, example="epochs=1")
    try:
        return build(JudgeTrainConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def expected_minutes(name: str) -> str:
    """What training preset NAME is expected to take, from the `# expected:` line its file declares."""
    path = PRESET_DIR / f"{name}.yaml"
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("# expected:"):
            return line.split(":", 1)[1].strip()
    return "time not measured for this preset"
