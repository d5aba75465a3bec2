"""Find, read and validate presets (``search_spaces/<name>.yaml`` or any YAML path)."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from search_spaces.errors import ConfigError
from search_spaces.schema import Preset, apply_overrides, parse_preset
from search_spaces.yaml_text import load_yaml

PRESET_DIR = Path(__file__).resolve().parent


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset_path(name: str) -> Path:
    """A preset name from ``search_spaces/`` or a path to a YAML file."""
    candidate = Path(name).expanduser()
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(str(candidate), "", "preset file does not exist")
        return candidate.resolve()
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        names = preset_names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError("--space", "", f"unknown preset {name!r}.{hint} Presets: {', '.join(names)}")
    return path


def load_preset(name: str, overrides: list[str] | None = None) -> Preset:
    """Load, override and validate a preset; raises ``ConfigError`` naming file and path."""
    path = resolve_preset_path(name)
    source = _display(path)
    text = path.read_text()
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ConfigError(source, where, f"not valid YAML ({getattr(err, 'problem', err)})") from None
    if raw is None:
        raw = {}
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError(source, "", "expected a mapping at the top level")
        raw = apply_overrides(raw, overrides, source)
        source = f"{source} (with --set {' '.join(overrides)})"
    return parse_preset(raw, path.stem, source, text)


def list_presets() -> list[Preset]:
    return [load_preset(name) for name in preset_names()]


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(PRESET_DIR.parent))
    except ValueError:
        return str(path)
