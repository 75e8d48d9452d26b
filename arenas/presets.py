"""Built-in tournament presets (YAML files in arenas/presets/)."""

from __future__ import annotations

from pathlib import Path

from debate.configs import named_yaml, read_yaml, yaml_names

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return yaml_names(PRESET_DIR)


def preset(name: str) -> dict:
    """A preset's plain config data; an unknown name lists the known ones."""
    return read_yaml(named_yaml(PRESET_DIR, name, "preset"))
