"""``ConfigError`` lives with the training config it validates; presets raise the same type."""

from trainables.errors import ConfigError

__all__ = ["ConfigError"]
