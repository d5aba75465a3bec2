"""Attribute an ablation grid's outcome to its factors: main effects and two-way interactions.

    python -m analysis.explain --ablation results/s0-mnist-ablation

The factors are the experiment's searched parameters (experiment.json ``searched``; ``seed``
is a replicate, not a factor; a continuous factor is split at its median). A *cell* is one
combination of factor levels; its value is the mean outcome of its trials.

- Main effect of factor F, level l against the reference level r (the first one listed in
  the space): the mean over every combination of the other factors (a *context*) where both
  cells exist of ``cell(F=l) − cell(F=r)``.
- Interaction of F (l vs r) and G (g vs s): the mean over contexts of the other factors of
  ``[cell(l, g) − cell(r, g)] − [cell(l, s) − cell(r, s)]``, i.e. how much F's effect
  changes when G moves from s to g (zero when the factors act independently).

Intervals are 95% t-intervals. With repeated seeds in the cells, an effect is a linear
contrast of cell means and its standard error comes from the within-cell (seed-to-seed)
variance pooled over all cells, the classical ANOVA contrast interval. With one trial per
cell, the interval is a t-interval over the effect's values in the different contexts, i.e.
its consistency across the rest of the grid.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.intervals import LEVEL, Estimate, mean_interval
from analysis.markdown import fmt, table
from analysis.results import Experiment, best_column
from analysis.space import searched_params

REPLICATE_PATHS = ("seed",)
MAX_LEVELS = 8  # a numeric factor with more distinct values than this is split at its median


@dataclass(frozen=True)
class Contrast:
    """Signed cells, each a partial assignment of factor levels, evaluated per context."""

    label: dict[str, Any]
    terms: tuple[tuple[float, tuple[tuple[str, Any], ...]], ...]
    context: tuple[str, ...]


class Grid:
    """Trials grouped into cells of factor levels, with per-cell outcomes."""

    def __init__(self, trials: pd.DataFrame, factors: Sequence[str], outcome: str, levels: dict[str, list[Any]]):
        self.factors = list(factors)
        self.levels = levels
        frame = trials[[*self.factors, outcome]].dropna(subset=[outcome])
        self.cells: dict[tuple, np.ndarray] = {
            (key if isinstance(key, tuple) else (key,)): group[outcome].to_numpy(dtype=float)
            for key, group in frame.groupby(self.factors, sort=False, dropna=False)
        }
        self.replicated = any(len(v) > 1 for v in self.cells.values())

    def means(self) -> dict[tuple, float]:
        return {k: float(v.mean()) for k, v in self.cells.items()}

    def per_context(self, contrast: Contrast) -> tuple[np.ndarray, list[tuple]]:
        """The contrast's value in every context where all its cells exist, and the cells used."""
        means = self.means()
        index = {f: i for i, f in enumerate(self.factors)}
        contexts = {tuple(key[index[f]] for f in contrast.context) for key in means}
        values, used = [], []
        for ctx in contexts:
            keys = []
            for _, assignment in contrast.terms:
                levels = dict(zip(contrast.context, ctx)) | dict(assignment)
                keys.append(tuple(levels[f] for f in self.factors))
            if all(k in means for k in keys):
                values.append(sum(sign * means[k] for (sign, _), k in zip(contrast.terms, keys)))
                used.extend(keys)
        return np.asarray(values, dtype=float), used

    def pooled_variance(self) -> tuple[float, int]:
        """Within-cell (seed-to-seed) variance pooled over cells, and its degrees of freedom."""
        squares = sum(float(((v - v.mean()) ** 2).sum()) for v in self.cells.values())
        dof = sum(len(v) - 1 for v in self.cells.values())
        return (squares / dof if dof else float("nan")), dof

    def estimate(self, contrast: Contrast) -> tuple[Estimate, int]:
        values, used = self.per_context(contrast)
        if len(values) == 0:
            return Estimate(float("nan"), float("nan"), float("nan"), 0, "t"), 0
        n_trials = sum(len(self.cells[k]) for k in used)
        if not self.replicated:
            est = mean_interval(values)
            return Estimate(est.value, est.low, est.high, n_trials, "t over contexts"), len(values)
        # Each used cell enters once with weight ±1/contexts: Var = Σ s²/(n_cell · contexts²).
        variance, dof = self.pooled_variance()
        value = float(values.mean())
        se = float(np.sqrt(sum(variance / len(self.cells[k]) for k in used)) / len(values))
        half = float(stats.t.ppf(0.5 + LEVEL / 2, dof) * se)
        return Estimate(value, value - half, value + half, n_trials, "t, pooled within-cell"), len(values)


def factor_levels(exp: Experiment, factors: Sequence[str]) -> tuple[pd.DataFrame, dict[str, list[Any]]]:
    """The trials with each factor as hashable levels, and each factor's ordered levels."""
    trials = exp.trials.copy()
    params = {p.column: p for p in searched_params(exp.meta, exp.trials)}
    levels = {}
    for column in factors:
        values = trials[column].map(lambda v: v.item() if isinstance(v, np.generic) else v)
        distinct = list(pd.unique(values.dropna()))
        param = params.get(column)
        if param is not None and param.categorical:
            order = [v for v in param.values if v in distinct] + [v for v in distinct if v not in param.values]
        elif len(distinct) > MAX_LEVELS and pd.api.types.is_numeric_dtype(trials[column]):
            median = float(trials[column].median())
            low, high = f"≤ {median:.4g}", f"> {median:.4g}"
            values = trials[column].map(lambda v, m=median, lo=low, hi=high: lo if v <= m else hi)
            order = [low, high]
        else:
            order = sorted(distinct, key=str)
        trials[column] = values
        levels[column] = order
    return trials, levels


def ablation_tables(exp: Experiment, metric: str | None = None) -> dict[str, pd.DataFrame]:
    """``levels`` (mean outcome per factor level), ``main`` effects and ``interactions``, with 95% intervals."""
    outcome = metric or best_column(exp.metric)
    if outcome not in exp.trials:
        numeric = [
            c
            for c in exp.trials.columns
            if pd.api.types.is_numeric_dtype(exp.trials[c]) and not c.startswith("config.")
        ]
        raise ValueError(
            f"{exp.path}: outcome column {outcome!r} is not in trials.parquet; valid: {', '.join(numeric)}"
        )
    factors = [c for c in exp.searched_columns() if c.removeprefix("config.") not in REPLICATE_PATHS]
    factors = [c for c in factors if exp.trials[c].nunique(dropna=True) > 1]
    if not factors:
        raise ValueError(f"{exp.path}: no searched factor takes more than one value; nothing to attribute")
    trials, levels = factor_levels(exp, factors)
    grid = Grid(trials, factors, outcome, levels)
    level_rows = []
    for f in factors:
        for level in levels[f]:
            est = mean_interval(trials.loc[trials[f] == level, outcome])
            level_rows.append(
                {
                    "factor": _name(f),
                    "level": level,
                    "trials": est.n,
                    f"{outcome} mean": est.value,
                    "ci95 low": est.low,
                    "ci95 high": est.high,
                }
            )
    main_rows, inter_rows = [], []
    for f in factors:
        ref = levels[f][0]
        for level in levels[f][1:]:
            contrast = Contrast(
                {"factor": _name(f), "level": level, "vs": ref},
                ((1.0, ((f, level),)), (-1.0, ((f, ref),))),
                tuple(x for x in factors if x != f),
            )
            est, contexts = grid.estimate(contrast)
            main_rows.append(
                {
                    **contrast.label,
                    "effect": est.value,
                    "ci95 low": est.low,
                    "ci95 high": est.high,
                    "contexts": contexts,
                    "ci excludes 0": est.excludes_zero(),
                }
            )
    for f, g in itertools.combinations(factors, 2):
        fr, gr = levels[f][0], levels[g][0]
        for fl, gl in itertools.product(levels[f][1:], levels[g][1:]):
            terms = (
                (1.0, ((f, fl), (g, gl))),
                (-1.0, ((f, fr), (g, gl))),
                (-1.0, ((f, fl), (g, gr))),
                (1.0, ((f, fr), (g, gr))),
            )
            contrast = Contrast(
                {
                    "factor A": _name(f),
                    "A level": f"{fmt(fl)} vs {fmt(fr)}",
                    "factor B": _name(g),
                    "B level": f"{fmt(gl)} vs {fmt(gr)}",
                },
                terms,
                tuple(x for x in factors if x not in (f, g)),
            )
            est, contexts = grid.estimate(contrast)
            inter_rows.append(
                {
                    **contrast.label,
                    "interaction": est.value,
                    "ci95 low": est.low,
                    "ci95 high": est.high,
                    "contexts": contexts,
                    "ci excludes 0": est.excludes_zero(),
                }
            )
    main = pd.DataFrame(main_rows)
    interactions = pd.DataFrame(inter_rows)
    if len(main):
        main = main.reindex(main["effect"].abs().sort_values(ascending=False).index).reset_index(drop=True)
    if len(interactions):
        order = interactions["interaction"].abs().sort_values(ascending=False).index
        interactions = interactions.reindex(order).reset_index(drop=True)
    return {
        "levels": pd.DataFrame(level_rows),
        "main": main,
        "interactions": interactions,
        "meta": pd.DataFrame(
            [
                {
                    "outcome": outcome,
                    "trials": sum(len(v) for v in grid.cells.values()),
                    "cells": len(grid.cells),
                    "replicated": grid.replicated,
                }
            ]
        ),
    }


def _name(column: str) -> str:
    return column.removeprefix("config.")


def ablation_markdown(exp: Experiment, metric: str | None = None) -> str:
    tables = ablation_tables(exp, metric)
    info = tables["meta"].iloc[0]
    outcome = info["outcome"]
    method = (
        "t with the seed-to-seed variance pooled over cells"
        if info["replicated"]
        else "t over contexts (one trial per cell, so the interval is the effect's consistency across the grid)"
    )
    main, inter = tables["main"], tables["interactions"]
    lines = [
        f"# Ablation: what drives {outcome} in {exp.name}",
        f"{info['trials']} trials in {info['cells']} cells; factors: "
        f"{', '.join(tables['levels']['factor'].unique())}. 95% intervals: {method}.",
        "## Mean outcome per level",
        table(tables["levels"], metric_columns=[f"{outcome} mean", "ci95 low", "ci95 high"]),
        "## Main effects",
        "Effect of each level against the reference level (the first in the space), averaged "
        "over every combination of the other factors.",
        table(main),
        "## Two-way interactions",
        "How much A's effect changes when B moves off its reference level "
        "(difference of differences; 0 = independent).",
        table(inter.head(20)),
        "## Conclusion",
    ]
    claims = []
    strong = main[main["ci excludes 0"]] if len(main) else main
    for _, row in strong.head(3).iterrows():
        claims.append(
            f"{row['factor']} = {fmt(row['level'])} instead of {fmt(row['vs'])} changes {outcome} by "
            f"{fmt(row['effect'], True)} (95% CI [{fmt(row['ci95 low'], True)}, {fmt(row['ci95 high'], True)}])."
        )
    for _, row in (inter[inter["ci excludes 0"]] if len(inter) else inter).head(3).iterrows():
        claims.append(
            f"{row['factor A']} ({row['A level']}) × {row['factor B']} ({row['B level']}) interact: "
            f"{fmt(row['interaction'], True)} (95% CI [{fmt(row['ci95 low'], True)}, {fmt(row['ci95 high'], True)}])."
        )
    if not claims:
        claims.append(
            f"No main effect or interaction has a 95% interval excluding 0 (largest main effect "
            f"{fmt(main['effect'].abs().max(), True) if len(main) else '—'}); more seeds per cell would narrow them."
        )
    worst = tables["levels"].sort_values(f"{outcome} mean").iloc[0]
    claims.append(
        f"The worst single level is {worst['factor']} = {fmt(worst['level'])} (mean {outcome} "
        f"{fmt(worst[f'{outcome} mean'], True)} over {worst['trials']} trials)."
    )
    lines.append("\n".join(f"- {c}" for c in claims))
    return "\n\n".join(lines) + "\n"
