"""Name → factory registries filled by a decorator (models, data sets, optimizers, schedules).

    from trainables.registry import Registry
    MODELS = Registry("model")

    @MODELS.register("cifar_resnet18")
    def cifar_resnet18(num_classes: int = 10, in_channels: int = 3): ...

    MODELS.create("cifar_resnet18", num_classes=10)

An unknown name raises ``UnknownNameError`` listing the closest registered names;
registering a name twice is an error, so two modules can never silently shadow
each other.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any


class UnknownNameError(KeyError):
    """A name that no registry entry has; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError quotes its message; users should read plain text.
        return str(self.args[0])


class Registry:
    """A case-sensitive mapping from names to factories, filled with ``@register``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def create(self, name: str, /, **options: Any) -> Any:
        return self.get(name)(**options)

    def unknown_message(self, name: object) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(self.names())})"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
