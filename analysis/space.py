"""The searched space as the results store records it (experiment.json ``space``).

Each searched parameter becomes a :class:`SearchedParam`: its dotted path, distribution
kind (``loguniform``, ``uniform``, ``randint``, ``choice``, ``grid``) and bounds or
choices. From it analysis derives Optuna distributions (for importance) and a [0, 1]
position of every trial's value (for parallel coordinates and nearest-neighbour matching),
logarithmic for ``loguniform`` and by choice index for categorical parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

CATEGORICAL_KINDS = ("choice", "grid")


@dataclass(frozen=True)
class SearchedParam:
    path: str
    kind: str
    values: tuple[Any, ...]

    @property
    def column(self) -> str:
        return f"config.{self.path}"

    @property
    def categorical(self) -> bool:
        return self.kind in CATEGORICAL_KINDS

    @property
    def log(self) -> bool:
        return self.kind == "loguniform"

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution; Ray's ``randint`` upper bound is exclusive, Optuna's inclusive."""
        if self.categorical:
            return CategoricalDistribution(list(self.values))
        low, high = self.values
        if self.kind == "randint":
            return IntDistribution(int(low), int(high) - 1)
        return FloatDistribution(float(low), float(high), log=self.log)

    def choice_of(self, value: Any) -> Any:
        """The declared choice equal to a stored value (Parquet may widen ints or strings)."""
        plain = value.item() if isinstance(value, np.generic) else value
        for choice in self.values:
            if choice == plain or str(choice) == str(plain):
                return choice
        raise KeyError(f"{self.path}: value {plain!r} is not one of the searched choices {list(self.values)}")

    def position(self, series: pd.Series) -> pd.Series:
        """Each value's place in the searched range, 0..1 (categorical: evenly spaced choices)."""
        if self.categorical:
            index = {str(c): i for i, c in enumerate(self.values)}
            span = max(len(self.values) - 1, 1)
            return series.map(lambda v: index.get(str(v.item() if isinstance(v, np.generic) else v), np.nan) / span)
        low, high = (float(v) for v in self.values)
        x = series.astype(float)
        if self.log:
            return (np.log(x) - np.log(low)) / (np.log(high) - np.log(low))
        return (x - low) / (high - low)


def searched_params(meta: dict[str, Any], trials: pd.DataFrame | None = None) -> list[SearchedParam]:
    """The searched parameters in the order experiment.json lists them (``searched``)."""
    space = meta.get("space") or {}
    params = []
    for path in meta.get("searched") or list(space):
        spec = space.get(path)
        if not spec:
            continue
        ((kind, values),) = spec.items()
        param = SearchedParam(path, kind, tuple(values))
        if trials is None or param.column in trials:
            params.append(param)
    return params
