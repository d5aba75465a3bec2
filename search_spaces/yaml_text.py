"""YAML parsing for presets and ``--set`` values, with YAML 1.2 numbers.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string; everyone writing a
learning rate means a number, so presets and overrides read it as a float.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class PresetLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3``, ``5E4`` and ``.5e-2`` as floats."""


PresetLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse ``text`` safely (plain data only)."""
    return yaml.load(text, Loader=PresetLoader)  # noqa: S506 - PresetLoader is a SafeLoader
