"""The one exception users see for anything they can get wrong in a preset, override or trial config."""

from __future__ import annotations


class ConfigError(ValueError):
    """A preset, override or sampled config that cannot be trained.

    The message always names where the problem is (file and dotted path) and what
    would be valid, e.g. ``search_spaces/cifar_resnet50.yaml: base.optimizer.lr:
    expected a number > 0, got '1e-3x'``.
    """

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source = source
        self.path = path
        self.detail = message
        where = ": ".join(part for part in (source, path) if part)
        super().__init__(f"{where}: {message}" if where else message)
