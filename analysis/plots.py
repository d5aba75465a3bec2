"""PNG plots of one experiment, drawn from the results store with matplotlib's Agg canvas.

Every function takes an :class:`~analysis.results.Experiment` (or a table derived from it)
and a path, writes one PNG and returns the path. Figures are built object-oriented on an
Agg canvas, so nothing touches pyplot's global state or needs a display.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.results import Experiment, best_column
from analysis.space import searched_params

STATUS_COLOURS = {
    "completed": "tab:blue",
    "stopped": "tab:orange",
    "diverged": "tab:red",
    "oom": "tab:purple",
    "error": "black",
}
DPI = 110


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def learning_curves(exp: Experiment, path: Path, top: int = 5) -> Path:
    """Validation accuracy and training loss per epoch: every trial in grey, the top ones in colour."""
    figure = _figure(11, 4)
    acc_ax, loss_ax = figure.subplots(1, 2)
    leaders = list(exp.leaderboard(top)["trial_id"])
    for trial_id, curve in exp.epochs.groupby("trial_id"):
        if trial_id in leaders:
            continue
        curve = curve.sort_values("epoch")
        acc_ax.plot(curve["epoch"], curve["val/acc"], color="0.8", linewidth=0.8)
        loss_ax.plot(curve["epoch"], curve["train/loss"], color="0.8", linewidth=0.8)
    for rank, trial_id in enumerate(leaders, start=1):
        curve = exp.epochs[exp.epochs["trial_id"] == trial_id].sort_values("epoch")
        label = f"#{rank} {trial_id}"
        acc_ax.plot(curve["epoch"], curve["val/acc"], marker="o", markersize=3, label=label)
        loss_ax.plot(curve["epoch"], curve["train/loss"], marker="o", markersize=3, label=label)
    acc_ax.set(
        xlabel="epoch", ylabel="val/acc", title=f"{exp.name}: validation accuracy (top {len(leaders)} in colour)"
    )
    loss_ax.set(xlabel="epoch", ylabel="train/loss", title="training loss", yscale="log")
    acc_ax.legend(fontsize=7)
    return _save(figure, path)


def metric_vs_params(exp: Experiment, path: Path) -> Path:
    """The best validation metric of every trial against each searched hyperparameter."""
    params = searched_params(exp.meta, exp.trials)
    value_col = best_column(exp.metric)
    columns = min(max(len(params), 1), 4)
    rows = max(int(np.ceil(len(params) / columns)), 1)
    figure = _figure(3.6 * columns, 3.0 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    rng = np.random.default_rng(0)  # jitter only, so overlapping categorical points stay visible
    for ax, param in zip(axes, params):
        for status, group in exp.trials.groupby("status"):
            y = group[value_col].astype(float)
            if param.categorical:
                x = param.position(group[param.column]) * max(len(param.values) - 1, 1)
                x = x + rng.uniform(-0.12, 0.12, size=len(x))
            else:
                x = group[param.column].astype(float)
            ax.scatter(x, y, s=18, alpha=0.8, color=STATUS_COLOURS.get(status, "gray"), label=status)
        if param.categorical:
            ax.set_xticks(range(len(param.values)), [str(v) for v in param.values])
        elif param.log:
            ax.set_xscale("log")
        ax.set(xlabel=param.path, ylabel=value_col)
    for ax in axes[len(params) :]:
        ax.set_visible(False)
    if params:
        axes[0].legend(fontsize=7)
    figure.suptitle(f"{exp.name}: {value_col} against each searched hyperparameter")
    return _save(figure, path)


def parallel_coordinates(exp: Experiment, path: Path) -> Path:
    """One line per scored trial across the searched parameters' ranges, coloured by the metric."""
    params = searched_params(exp.meta, exp.trials)
    value_col = best_column(exp.metric)
    trials = exp.trials[np.isfinite(exp.trials[value_col].astype(float))]
    positions = pd.DataFrame({p.path: p.position(trials[p.column]).to_numpy() for p in params})
    values = trials[value_col].astype(float).to_numpy()
    low, high = (values.min(), values.max()) if len(values) else (0.0, 1.0)
    positions[value_col] = (values - low) / (high - low) if high > low else 0.5
    figure = _figure(max(2.0 * len(positions.columns), 6), 4.5)
    ax = figure.subplots()
    cmap = matplotlib.colormaps["viridis"]
    order = np.argsort(values if exp.mode == "max" else -values)  # best drawn last, on top
    xs = np.arange(len(positions.columns))
    for i in order:
        ax.plot(xs, positions.iloc[i].to_numpy(), color=cmap(positions[value_col].iloc[i]), alpha=0.75, linewidth=1.2)
    labels = []
    for param in params:
        if param.categorical:
            labels.append(f"{param.path}\n{' | '.join(str(v) for v in param.values)}")
        else:
            labels.append(f"{param.path}\n{param.values[0]:g} … {param.values[1]:g}{' (log)' if param.log else ''}")
    labels.append(f"{value_col}\n{low:.4f} … {high:.4f}")
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_yticks([0, 1], ["low", "high"])
    for x in xs:
        ax.axvline(x, color="0.6", linewidth=0.6)
    ax.set_title(f"{exp.name}: parallel coordinates ({len(values)} scored trials, brighter = better)")
    return _save(figure, path)


def importance_bars(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Horizontal bars of fANOVA (and PED-ANOVA where computed) importance per parameter."""
    figure = _figure(7, 0.5 * max(len(table), 2) + 1.5)
    ax = figure.subplots()
    y = np.arange(len(table))
    ax.barh(y - 0.2, table["fanova"], height=0.4, label="fANOVA")
    if table["ped_anova"].notna().any():
        ax.barh(y + 0.2, table["ped_anova"].fillna(0.0), height=0.4, label="PED-ANOVA")
    ax.set_yticks(y, table["parameter"])
    ax.invert_yaxis()
    ax.set(xlabel="importance (share, sums to 1)", title=title)
    ax.legend(fontsize=8)
    return _save(figure, path)


def rung_bars(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Trials reaching each ASHA rung and the final epoch, with those stopped there."""
    figure = _figure(6, 3.5)
    ax = figure.subplots()
    labels = [f"epoch {e}" + (" (max)" if k == "max_epochs" else "") for e, k in zip(table["epoch"], table["kind"])]
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["reached"], width=0.4, label="reached")
    ax.bar(x + 0.2, table["stopped_here"], width=0.4, label="stopped there", color="tab:orange")
    for xi, n in zip(x, table["reached"]):
        ax.annotate(str(n), (xi - 0.2, n), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set(ylabel="trials", title=title)
    ax.legend(fontsize=8)
    return _save(figure, path)
