"""Search-space presets: loading and validation, the translation to Ray Tune, searchers and schedulers.

from search_spaces import load_preset, list_presets
preset = load_preset("quickstart", overrides=["optimizer.lr=0.05"])
"""

from __future__ import annotations

from search_spaces.errors import ConfigError
from search_spaces.loader import PRESET_DIR, list_presets, load_preset
from search_spaces.schema import Distribution, Preset

__all__ = ["PRESET_DIR", "ConfigError", "Distribution", "Preset", "list_presets", "load_preset"]
