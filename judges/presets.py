"""Built-in judge training presets (YAML files in judges/presets/) and config loading."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from debate.configs import expected_line, load_config, yaml_names
from judges.train import JudgeTrainConfig

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return yaml_names(PRESET_DIR)


def train_config(config: Optional[str], preset: Optional[str], overrides: Sequence[str] = ()) -> JudgeTrainConfig:
    """A judge training config from a file or a preset (default: embedded), with KEY=VALUE overrides."""
    return load_config(JudgeTrainConfig, PRESET_DIR, config, preset, "embedded", "judge preset", overrides)


def expected_minutes(name: str) -> str:
    """What training preset NAME is expected to take, from the `# expected:` line its file declares."""
    return expected_line(PRESET_DIR / f"{name}.yaml")
