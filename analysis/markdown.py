"""Markdown rendering for reports: numbers formatted one way everywhere, tables from DataFrames.

Metrics (accuracies, losses) print with four decimals; other floats with four significant
digits; integers whole; missing values as an em dash. Reports and tests share this module,
so a number in ``report.md`` can be read back and compared with the Parquet it came from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

MISSING = "—"

# Columns whose values are accuracies or losses: fixed four decimals, comparable across rows.
METRIC_MARKERS = (
    "acc",
    "loss",
    "val",
    "test",
    "train",
    "gap",
    "mean",
    "std",
    "ci ",
    "ci_",
    "ci95",
    "interaction",
    "effect",
    "diff",
    "share",
)


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, metric: bool = False) -> str:
    """One value as report text; ``metric`` forces four decimals for floats."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(fmt(v, metric) for v in value)
    if is_missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if metric:
            return f"{value:.4f}"
        if value.is_integer() and abs(value) < 1e12:  # a median of counts or sizes reads as a whole number
            return f"{int(value):,}"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def is_metric_column(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in METRIC_MARKERS)


def table(frame: pd.DataFrame, metric_columns: Iterable[str] | None = None) -> str:
    """A GitHub markdown table; columns named like metrics (or listed) get four decimals."""
    if frame.empty:
        return "_(none)_"
    forced = set(metric_columns or ())
    columns = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in frame.itertuples(index=False):
        cells = [fmt(v, metric=c in forced or is_metric_column(c)) for c, v in zip(columns, row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def key_values(pairs: Mapping[str, Any]) -> str:
    """A two-column table of named values."""
    return table(pd.DataFrame({"quantity": list(pairs), "value": [fmt(v) for v in pairs.values()]}))


def parse_table(text: str) -> pd.DataFrame:
    """Read back a table written by :func:`table` (strings; numbers keep their formatting)."""
    rows = [line.strip().strip("|").split(" | ") for line in text.strip().splitlines() if line.startswith("|")]
    header, body = rows[0], [r for r in rows[2:]]
    return pd.DataFrame([[c.strip() for c in r] for r in body], columns=[h.strip() for h in header])


def parse_number(text: str) -> float:
    """The float a formatted cell shows (``—`` is NaN)."""
    text = text.strip()
    if text == MISSING:
        return float("nan")
    return float(text.replace(",", ""))
