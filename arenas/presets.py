"""Built-in tournament presets (YAML files in arenas/presets/)."""

from __future__ import annotations

from pathlib import Path

from debate.configs import ConfigError, read_yaml

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset(name: str) -> dict:
    """A preset's plain config data; an unknown name lists the known ones."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    return read_yaml(path)
