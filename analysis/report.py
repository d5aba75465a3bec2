"""One experiment's report: ``report.md`` with PNG plots beside it, from the results store only.

    python -m analysis.report results/quickstart-20261122-101500
    python -m analysis.report results/qs --top 15 --out /tmp/qs-report

Sections: the run (data, budget, provenance), the seed study's reported numbers beside ours
(when the preset has a ``reference``), the leaderboard with test results, test results of the
top-k and of confirm re-runs (mean ± std over seeds), learning curves of the top trials, the
validation metric against each searched hyperparameter, parallel coordinates, hyperparameter
importance (fANOVA, PED-ANOVA), what each ASHA rung kept, and failed trials with their configs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from analysis import plots
from analysis.importance import importance_table
from analysis.intervals import mean_interval
from analysis.markdown import fmt, key_values, table
from analysis.results import Experiment, ResultsError, best_column, load_experiment
from analysis.rungs import rung_table, still_improving
from analysis.space import searched_params

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"
FAILED_STATUSES = ("diverged", "oom", "error")

# A seed study's reported quantity → how to read ours from the store (None: not measured here).
REFERENCE_COUNTERPARTS = {
    "test_acc": "top-1 test/acc (confirm mean where re-run)",
    "train_acc": "best trial's final train/acc",
    "val_acc": "best trial's val/acc_best",
    "best_val_acc": "best trial's val/acc_best",
    "params": "best trial's model/params",
    "first_epoch_loss": "best trial's epoch-1 train/loss",
    "first_epoch_train_loss": "best trial's epoch-1 train/loss",
}


def leaderboard_table(exp: Experiment, top: int = 10) -> pd.DataFrame:
    """The top trials with their validation metric, test result (where measured) and searched values."""
    value_col = best_column(exp.metric)
    board = exp.leaderboard(top).reset_index(drop=True)
    columns = {"trial_id": board["trial_id"], value_col: board[value_col]}
    if "test/acc" in board:
        columns["test/acc"] = board["test/acc"]
    for name in ("epochs_run", "best_epoch", "status"):
        columns[name] = board[name]
    for param in searched_params(exp.meta, exp.trials):
        columns[param.path] = board[param.column]
    if "model/params" in board:
        columns["params"] = board["model/params"]
    frame = pd.DataFrame(columns)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame


def confirm_summary(exp: Experiment) -> pd.DataFrame:
    """Per re-trained config: seeds, test/acc mean ± std and its 95% t-interval."""
    final = exp.final
    if final.empty or "kind" not in final or not (final["kind"] == "confirm").any():
        return pd.DataFrame()
    rows = []
    confirm = final[final["kind"] == "confirm"]
    source_col = "source_trial_id" if "source_trial_id" in confirm else "rank"
    for source, group in confirm.groupby(source_col, sort=False):
        estimate = mean_interval(group["test/acc"])
        rows.append(
            {
                "source_trial_id": source,
                "rank": int(group["rank"].iloc[0]),
                "seeds": len(group),
                "test/acc mean": estimate.value,
                "test/acc std": float(group["test/acc"].std(ddof=1)) if len(group) > 1 else float("nan"),
                "ci95 low": estimate.low,
                "ci95 high": estimate.high,
                "test/acc min": float(group["test/acc"].min()),
                "test/acc max": float(group["test/acc"].max()),
                "val_best mean": float(group["val_best"].mean()),
            }
        )
    return pd.DataFrame(rows).sort_values("rank", ignore_index=True)


def reference_comparison(exp: Experiment) -> pd.DataFrame:
    """The seed study's reported numbers beside the corresponding numbers of this experiment."""
    reference = exp.meta.get("reference") or {}
    reported = reference.get("reported") or {}
    if not reported:
        return pd.DataFrame()
    best = exp.leaderboard(1)
    best_row = best.iloc[0] if len(best) else None
    confirm = confirm_summary(exp)
    top_k = exp.final[exp.final.get("kind", pd.Series(dtype=str)) == "top_k"] if not exp.final.empty else pd.DataFrame()
    ours: dict[str, Any] = {}
    if len(confirm):
        ours["test_acc"] = confirm["test/acc mean"].iloc[0]
    elif len(top_k):
        ours["test_acc"] = top_k.sort_values("rank")["test/acc"].iloc[0]
    if best_row is not None:
        ours["train_acc"] = best_row.get("train/acc")
        ours["val_acc"] = ours["best_val_acc"] = best_row.get("val/acc_best")
        ours["params"] = best_row.get("model/params")
        curve = exp.epochs[(exp.epochs["trial_id"] == best_row["trial_id"]) & (exp.epochs["epoch"] == 1)]
        if len(curve):
            ours["first_epoch_loss"] = ours["first_epoch_train_loss"] = float(curve["train/loss"].iloc[0])
    rows = []
    for key, value in reported.items():
        counterpart = REFERENCE_COUNTERPARTS.get(key)
        rows.append(
            {
                "quantity": key,
                "reported": value,
                "ours": ours.get(key) if counterpart else None,
                "ours measured as": counterpart or "not measured by this platform",
            }
        )
    return pd.DataFrame(rows)


def failed_table(exp: Experiment) -> pd.DataFrame:
    failed = exp.trials[exp.trials["status"].isin(FAILED_STATUSES)]
    columns = ["trial_id", "status", "epochs_run", *[p.column for p in searched_params(exp.meta, exp.trials)], "error"]
    return failed[[c for c in columns if c in failed]].rename(columns=lambda c: c.removeprefix("config."))


def build_report(exp: Experiment, out_dir: Path | None = None, top: int = 10) -> Path:
    """Write ``report.md`` and its PNGs into ``out_dir`` (default: the experiment folder)."""
    out_dir = Path(out_dir or exp.path)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [_header(exp)]
    sections += _reference_section(exp)
    sections += [
        "## Leaderboard",
        f"Top {top} by `{best_column(exp.metric)}` (selection metric; the test set "
        "is measured once, after the search, for the top-k only).",
        table(leaderboard_table(exp, top)),
    ]
    sections += _test_section(exp)
    sections += _plot_sections(exp, out_dir, top)
    sections += _scheduler_section(exp, out_dir)
    failed = failed_table(exp)
    sections += ["## Failed trials", f"{len(failed)} trial(s) diverged, ran out of memory or errored.", table(failed)]
    path = out_dir / REPORT_FILE
    path.write_text("\n\n".join(sections) + "\n")
    return path


def _header(exp: Experiment) -> str:
    meta, trials = exp.meta, exp.trials
    counts = trials["status"].value_counts().to_dict()
    data = meta.get("data", {})
    tune = meta.get("tune", {})
    facts = {
        "preset": meta.get("preset"),
        "description": meta.get("description"),
        "data": f"{data.get('name')} ({data.get('train_images')} train / {data.get('val_images')} val / "
        f"{data.get('test_images')} test images, shape {data.get('image_shape')})",
        "search": f"{tune.get('searcher')} + {tune.get('scheduler')}, metric {exp.metric} ({exp.mode}), "
        f"up to {tune.get('max_epochs')} epochs",
        "trials": f"{len(trials)} ({', '.join(f'{v} {k}' for k, v in counts.items())})",
        "wall time (s)": meta.get("wall_s"),
        "command": f"`{meta.get('command', '')}`",
        "git commit": meta.get("git_commit"),
        "smoke budget": meta.get("smoke"),
    }
    return f"# Report: {exp.name}\n\n{key_values(facts)}"


def _reference_section(exp: Experiment) -> list[str]:
    comparison = reference_comparison(exp)
    if comparison.empty:
        return []
    reference = exp.meta.get("reference") or {}
    shown = comparison.copy().astype(object)
    for column in ("reported", "ours"):  # accuracies and losses to four decimals, counts whole
        shown[column] = [
            fmt(v, metric="acc" in q or "loss" in q) for q, v in zip(comparison["quantity"], comparison[column])
        ]
    return [
        f"## Seed study {reference.get('study', '')}: reported vs ours",
        "The study's own numbers (its selection may have used the test set); ours select on validation.",
        table(shown),
    ]


def _test_section(exp: Experiment) -> list[str]:
    final = exp.final
    out = ["## Test results"]
    if final.empty:
        return [*out, "No test results in final.parquet (top_k_test was 0)."]
    top_k = final[final["kind"] == "top_k"].sort_values("rank")
    keep = [
        c
        for c in ("rank", "trial_id", "checkpoint_epoch", "val_best", "test/acc", "test/loss", "test_images")
        if c in top_k
    ]
    out += ["Top-k trials' best checkpoints, each tested once:", table(top_k[keep])]
    summary = confirm_summary(exp)
    if summary.empty:
        out.append("No confirm re-runs (run tune.py with `--confirm N` to re-train the best config with N seeds).")
    else:
        first = summary.iloc[0]
        out += [
            f"Confirm re-runs (full epochs, FIFO, fresh seeds): top-1 config test/acc "
            f"{fmt(first['test/acc mean'], True)} ± {fmt(first['test/acc std'], True)} (mean ± std over "
            f"{int(first['seeds'])} seeds; 95% t-interval [{fmt(first['ci95 low'], True)}, {fmt(first['ci95 high'], True)}]).",
            table(summary),
        ]
        confirm = final[final["kind"] == "confirm"]
        keep = [
            c
            for c in (
                "source_trial_id",
                "trial_id",
                "seed",
                "status",
                "checkpoint_epoch",
                "val_best",
                "test/acc",
                "test/loss",
            )
            if c in confirm
        ]
        out.append(table(confirm[keep]))
    return out


def _plot_sections(exp: Experiment, out_dir: Path, top: int) -> list[str]:
    curves = plots.learning_curves(exp, out_dir / "learning_curves.png", top=min(top, 5))
    scatter = plots.metric_vs_params(exp, out_dir / "metric_vs_params.png")
    parallel = plots.parallel_coordinates(exp, out_dir / "parallel_coordinates.png")
    out = [
        "## Learning curves",
        f"![learning curves]({curves.name})",
        "## Validation metric against each hyperparameter",
        "Colour is the trial's status; a stopped trial shows the best value it reached before the scheduler cut it.",
        f"![metric vs hyperparameters]({scatter.name})",
        "## Parallel coordinates",
        f"![parallel coordinates]({parallel.name})",
        "## Hyperparameter importance",
    ]
    importance = importance_table(exp)
    if importance.empty:
        out.append(
            "Not computed: too few scored trials, or no searched parameter varied, or every trial scored the same."
        )
        return out
    bars = plots.importance_bars(importance, out_dir / "importance.png", f"{exp.name}: hyperparameter importance")
    scored = int(exp.trials["status"].isin(["completed", "stopped", "diverged"]).sum())
    out += [
        f"Over {scored} scored trials (completed, stopped early, diverged; each with the best "
        f"`{best_column(exp.metric)}` it reached), fANOVA (seeded random forest) and PED-ANOVA "
        "(top quantile vs all), both from Optuna.",
        table(importance, metric_columns=["fanova", "ped_anova"]),
        f"![importance]({bars.name})",
    ]
    return out


def _scheduler_section(exp: Experiment, out_dir: Path) -> list[str]:
    tune = exp.meta.get("tune", {})
    rungs = rung_table(exp)
    bars = plots.rung_bars(rungs, out_dir / "rungs.png", f"{exp.name}: trials per rung ({tune.get('scheduler')})")
    out = [
        "## Scheduler: what each rung kept",
        f"Scheduler {tune.get('scheduler')}: grace period {tune.get('grace_period_epochs')} epoch(s), "
        f"reduction factor {tune.get('reduction_factor')}, max {tune.get('max_epochs')} epochs.",
        table(rungs, metric_columns=["kept_share"]),
        f"![rungs]({bars.name})",
    ]
    improving = still_improving(exp)
    if len(improving):
        known = improving["improving"].dropna()
        out.append(
            f"Stopped at the first rung (epoch {int(improving['epoch'].iloc[0])}): {len(improving)} trial(s), "
            f"{int(known.sum())} of {len(known)} with a trend still improving when cut "
            "(last epoch their best so far)."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report", description="Write report.md with plots for one experiment."
    )
    parser.add_argument(
        "experiment", type=Path, help="experiment folder (holds trials.parquet, epochs.parquet, experiment.json)"
    )
    parser.add_argument("--out", type=Path, help="folder for report.md and PNGs (default: the experiment folder)")
    parser.add_argument("--top", type=int, default=10, help="leaderboard length (default 10)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        exp = load_experiment(args.experiment)
    except ResultsError as err:
        print(f"analysis.report: error: {err}", file=sys.stderr)
        return 2
    print(build_report(exp, args.out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
