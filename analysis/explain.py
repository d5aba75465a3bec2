"""Explain a gap between two experiments, or attribute an ablation grid's outcome to its factors.

    python -m analysis.explain results/cifar_resnet18 results/cifar_resnet50
    python -m analysis.explain results/s0-ablation --ablation
    python -m analysis.explain A B --out gap.md            # markdown to stdout and to a file

Two experiments: best vs best (confirm re-runs with intervals, else the top-k test numbers),
the same hyperparameters on both (shared or nearest configs, compared at the same epoch),
sensitivity (spread of outcomes, share of good configs), the train–validation gap, epochs to
reach a threshold, whether early stopping cut trials that were still improving, parameters
and FLOPs, then a conclusion whose every claim cites one of those numbers.

``--ablation``: main effects and two-way interactions of the experiment's searched factors,
with bootstrap intervals (see :mod:`analysis.ablation`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.ablation import ablation_markdown
from analysis.intervals import difference_interval, mean_interval
from analysis.markdown import fmt, table
from analysis.results import Experiment, ResultsError, best_column, load_experiment
from analysis.rungs import still_improving
from analysis.space import searched_params

log = logging.getLogger(__name__)

SCORED = ("completed", "stopped", "diverged")
GOOD_MARGIN = 0.02  # a "good" config is within 2 accuracy points of its own experiment's best
NEIGHBOUR_RADIUS = 0.15  # largest normalised distance at which two configs count as "the same"
THRESHOLD_FRACTION = 0.95  # epochs-to-threshold uses 95% of the weaker experiment's best


@dataclass
class Findings:
    """Numbers the sections computed, keyed so the conclusion can cite them."""

    sections: list[str] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)


def _scored(exp: Experiment) -> pd.DataFrame:
    return exp.trials[exp.trials["status"].isin(SCORED)]


def _best_trial(exp: Experiment) -> pd.Series:
    return exp.leaderboard(1).iloc[0]


# ------------------------------------------------------------------ best vs best


def best_vs_best(a: Experiment, b: Experiment, out: Findings) -> None:
    conf_a, conf_b = (e.final[e.final["kind"] == "confirm"] if "kind" in e.final else pd.DataFrame() for e in (a, b))
    lines = ["## Best vs best"]
    if len(conf_a) and len(conf_b):
        rows = []
        for exp, conf in ((a, conf_a), (b, conf_b)):
            top = conf[conf["rank"] == conf["rank"].min()]
            est = mean_interval(top["test/acc"])
            rows.append(
                {
                    "experiment": exp.name,
                    "seeds": est.n,
                    "test/acc mean": est.value,
                    "test/acc std": float(top["test/acc"].std(ddof=1)) if est.n > 1 else float("nan"),
                    "ci95 low": est.low,
                    "ci95 high": est.high,
                }
            )
        top_a = conf_a[conf_a["rank"] == conf_a["rank"].min()]["test/acc"]
        top_b = conf_b[conf_b["rank"] == conf_b["rank"].min()]["test/acc"]
        diff = difference_interval(top_a, top_b)
        lines += [
            "Best config of each, re-trained with fresh seeds (confirm runs), test accuracy:",
            table(pd.DataFrame(rows)),
            f"Difference {a.name} − {b.name}: {diff.text()}.",
        ]
        verdict = "a real gap" if diff.excludes_zero() else "not distinguishable from seed noise"
        out.claims.append(
            f"Best vs best over confirm seeds, {a.name} − {b.name} = {fmt(diff.value, True)} test/acc "
            f"(95% CI [{fmt(diff.low, True)}, {fmt(diff.high, True)}]): {verdict}."
        )
    else:
        missing = ", ".join(e.name for e, c in ((a, conf_a), (b, conf_b)) if c.empty)
        rows = []
        for exp in (a, b):
            top_k = (
                exp.final[exp.final["kind"] == "top_k"].sort_values("rank") if "kind" in exp.final else pd.DataFrame()
            )
            best = _best_trial(exp)
            rows.append(
                {
                    "experiment": exp.name,
                    best_column(exp.metric): best[best_column(exp.metric)],
                    "top-1 test/acc": top_k["test/acc"].iloc[0] if len(top_k) else float("nan"),
                    "top-k test/acc": list(top_k["test/acc"]) if len(top_k) else float("nan"),
                    "top-k": len(top_k),
                }
            )
        lines += [
            f"No confirm runs for {missing}: no seed-to-seed interval exists, so these are single runs "
            "(`tune.py --confirm N` re-trains the best config with N seeds).",
            table(pd.DataFrame(rows)),
        ]
        gap = rows[0]["top-1 test/acc"] - rows[1]["top-1 test/acc"]
        val_gap = rows[0][best_column(a.metric)] - rows[1][best_column(b.metric)]
        out.claims.append(
            f"Best vs best (single runs, no interval): top-1 test/acc {a.name} − {b.name} = {fmt(gap, True)}, "
            f"best validation {fmt(val_gap, True)}."
        )
    out.sections.append("\n\n".join(lines))


# --------------------------------------------------------- same hyperparameters


def _value_at_epoch(exp: Experiment, trial_id: str, epoch: int) -> float:
    curve = exp.epochs[(exp.epochs["trial_id"] == trial_id) & (exp.epochs["epoch"] <= epoch)]
    return float(curve["val/acc"].max()) if len(curve) else float("nan")


def comparable_params(a: Experiment, b: Experiment) -> list:
    """Hyperparameters both searched over the same distribution; a model's own options (width,
    dropout, …) only when both experiments train the same model, since "width 32" of a CNN and
    of an MLP are different things."""
    params_b = {p.path: p for p in searched_params(b.meta, b.trials)}
    same_model = a.meta.get("base", {}).get("model.name") == b.meta.get("base", {}).get("model.name")
    return [
        p
        for p in searched_params(a.meta, a.trials)
        if params_b.get(p.path) == p and (same_model or not p.path.startswith("model."))
    ]


def matched_configs(a: Experiment, b: Experiment) -> pd.DataFrame:
    """Each A trial paired with its nearest B trial over the hyperparameters both searched,
    compared by best val/acc up to the epoch both reached (so early stopping does not decide)."""
    common = comparable_params(a, b)
    ta, tb = _scored(a), _scored(b)
    if not common or ta.empty or tb.empty:
        return pd.DataFrame()
    pos_a = np.column_stack([p.position(ta[p.column]).to_numpy(dtype=float) for p in common])
    pos_b = np.column_stack([p.position(tb[p.column]).to_numpy(dtype=float) for p in common])
    # Euclidean distance in the unit cube, scaled so 1.0 is the cube's diagonal.
    dist = np.sqrt(np.nansum((pos_a[:, None, :] - pos_b[None, :, :]) ** 2, axis=2) / len(common))
    rows = []
    for i, j in enumerate(dist.argmin(axis=1)):
        ra, rb = ta.iloc[i], tb.iloc[j]
        epoch = int(min(ra["epochs_run"], rb["epochs_run"]))
        rows.append(
            {
                "trial_a": ra["trial_id"],
                "trial_b": rb["trial_id"],
                "distance": float(dist[i, j]),
                "epoch": epoch,
                "val_a": _value_at_epoch(a, ra["trial_id"], epoch),
                "val_b": _value_at_epoch(b, rb["trial_id"], epoch),
                **{p.path: f"{fmt(ra[p.column])} / {fmt(rb[p.column])}" for p in common},
            }
        )
    frame = pd.DataFrame(rows)
    frame["diff"] = frame["val_a"] - frame["val_b"]
    return frame.sort_values(["distance", "diff"], ignore_index=True)


def same_hyperparameters(a: Experiment, b: Experiment, out: Findings) -> None:
    lines = ["## The same hyperparameters on both"]
    pairs = matched_configs(a, b)
    if pairs.empty:
        lines.append(
            "The two experiments searched no hyperparameter in common over the same distribution "
            "(a model's own options count only for the same model); no matched comparison is possible."
        )
        out.sections.append("\n\n".join(lines))
        return
    close = pairs[pairs["distance"] <= NEIGHBOUR_RADIUS].drop_duplicates("trial_b")
    exact = int((close["distance"] < 1e-9).sum())
    compared = [p.path for p in comparable_params(a, b)]
    lines.append(
        f"Each {a.name} trial paired with the nearest {b.name} trial over the hyperparameters both searched "
        f"with the same distribution ({', '.join(compared)}) "
        f"(distance 0 = identical, 1 = opposite corners; pairs within {NEIGHBOUR_RADIUS} kept, "
        f"{exact} identical); values are best val/acc up to the epoch both reached."
    )
    if close.empty:
        lines.append(
            f"No pair is closer than {NEIGHBOUR_RADIUS} (nearest {fmt(pairs['distance'].min())}); "
            "the searches explored different regions, so only the five nearest pairs are shown."
        )
        close_shown = pairs.head(5)
    else:
        close_shown = close
        est = mean_interval(close["diff"])
        wins = int((close["diff"] > 0).sum())
        lines.append(
            f"Over {len(close)} matched pairs, {a.name} − {b.name} = {est.text()}; {a.name} was better in "
            f"{wins} of {len(close)}."
        )
        out.claims.append(
            f"At matched hyperparameters ({len(close)} pairs), {a.name} − {b.name} = {fmt(est.value, True)} "
            f"val/acc (95% CI [{fmt(est.low, True)}, {fmt(est.high, True)}]), {a.name} better in {wins}/{len(close)}."
        )
    lines.append(table(close_shown.head(10), metric_columns=["distance"]))
    out.sections.append("\n\n".join(lines))


# ------------------------------------------------------------------ sensitivity


def sensitivity(a: Experiment, b: Experiment, out: Findings) -> None:
    col_a, col_b = best_column(a.metric), best_column(b.metric)
    rows = []
    for exp, col in ((a, col_a), (b, col_b)):
        values = _scored(exp)[col].astype(float)
        completed = exp.trials[exp.trials["status"] == "completed"][col].astype(float)
        bar = values.max() - GOOD_MARGIN  # against its own best: flatness, not which model is better
        rows.append(
            {
                "experiment": exp.name,
                "trials": len(values),
                "best": values.max(),
                "median": values.median(),
                "iqr": values.quantile(0.75) - values.quantile(0.25),
                "std": values.std(ddof=1),
                "worst": values.min(),
                "good share": float((values >= bar).mean()),
                "good share of completed": float((completed >= bar).mean()) if len(completed) else float("nan"),
            }
        )
    frame = pd.DataFrame(rows)
    out.sections.append(
        "\n\n".join(
            [
                "## Sensitivity to hyperparameters",
                f"Spread of the best validation accuracy over every scored trial; a good config comes within "
                f"{GOOD_MARGIN} of its own experiment's best (a flat landscape has a high share).",
                table(frame, metric_columns=["best", "median", "iqr", "worst"]),
            ]
        )
    )
    ra, rb = frame.iloc[0], frame.iloc[1]
    more = a.name if ra["good share"] < rb["good share"] else b.name
    out.claims.append(
        f"Share of good configs: {a.name} {fmt(ra['good share'], True)} vs {b.name} {fmt(rb['good share'], True)} "
        f"(median {fmt(ra['median'], True)} vs {fmt(rb['median'], True)}); {more} is the more sensitive to its hyperparameters."
    )


# ------------------------------------------------------------ gap and speed


def _final_epoch_rows(exp: Experiment) -> pd.DataFrame:
    epochs = exp.epochs
    if "status" in epochs:
        epochs = epochs[epochs["status"].isin(["running", "completed"])]
    return epochs.sort_values("epoch").groupby("trial_id").tail(1)


def train_val_gap(a: Experiment, b: Experiment, out: Findings) -> None:
    rows = []
    for exp in (a, b):
        best = _best_trial(exp)
        last = _final_epoch_rows(exp)
        completed = last[last["trial_id"].isin(exp.trials[exp.trials["status"] == "completed"]["trial_id"])]
        best_last = last[last["trial_id"] == best["trial_id"]]
        rows.append(
            {
                "experiment": exp.name,
                "best trial": best["trial_id"],
                "best train/acc": best_last["train/acc"].iloc[0] if len(best_last) else float("nan"),
                "best val/acc": best_last["val/acc"].iloc[0] if len(best_last) else float("nan"),
                "best gap": (best_last["train/acc"] - best_last["val/acc"]).iloc[0] if len(best_last) else float("nan"),
                "median gap (completed)": float((completed["train/acc"] - completed["val/acc"]).median())
                if len(completed)
                else float("nan"),
                "best train/loss": best_last["train/loss"].iloc[0] if len(best_last) else float("nan"),
                "best val/loss": best_last["val/loss"].iloc[0] if len(best_last) else float("nan"),
            }
        )
    frame = pd.DataFrame(rows)
    out.sections.append(
        "\n\n".join(
            [
                "## Train–validation gap",
                "At each trial's last healthy epoch. Training accuracy is the running mean over the epoch's batches, with "
                "augmentation and dropout on, so a small negative gap is no paradox.",
                table(frame),
            ]
        )
    )
    ra, rb = frame.iloc[0], frame.iloc[1]
    out.claims.append(
        f"Train − val accuracy of the best trial: {a.name} {fmt(ra['best gap'], True)} vs {b.name} "
        f"{fmt(rb['best gap'], True)}"
        + (
            f"; {b.name} overfits more"
            if rb["best gap"] - ra["best gap"] > 0.05
            else f"; {a.name} overfits more"
            if ra["best gap"] - rb["best gap"] > 0.05
            else "; neither overfits markedly more (difference ≤ 0.05)"
        )
        + "."
    )


def epochs_to_threshold(a: Experiment, b: Experiment, out: Findings) -> None:
    col_a, col_b = best_column(a.metric), best_column(b.metric)
    threshold = THRESHOLD_FRACTION * min(_scored(a)[col_a].max(), _scored(b)[col_b].max())
    rows = []
    for exp in (a, b):
        firsts, reached = [], 0
        for _, curve in exp.epochs.groupby("trial_id"):
            hit = curve[curve["val/acc"] >= threshold]
            if len(hit):
                reached += 1
                firsts.append(int(hit["epoch"].min()))
        best = _best_trial(exp)
        best_curve = exp.epochs[exp.epochs["trial_id"] == best["trial_id"]]
        best_hit = best_curve[best_curve["val/acc"] >= threshold]
        epoch1 = exp.epochs[exp.epochs["epoch"] == 1]
        completed = exp.trials[exp.trials["status"] == "completed"]
        rows.append(
            {
                "experiment": exp.name,
                "best trial: first epoch ≥ threshold": int(best_hit["epoch"].min()) if len(best_hit) else None,
                "median first epoch (trials that reached it)": float(np.median(firsts)) if firsts else float("nan"),
                "trials that reached it": f"{reached}/{exp.epochs['trial_id'].nunique()}",
                "median epoch-1 train/loss": float(epoch1["train/loss"].median()) if len(epoch1) else float("nan"),
                "median epoch-1 val/acc": float(epoch1["val/acc"].median()) if len(epoch1) else float("nan"),
                "completed trials best at last epoch": f"{int((completed['best_epoch'] == completed['epochs_run']).sum())}/{len(completed)}",
            }
        )
    frame = pd.DataFrame(rows)
    out.sections.append(
        "\n\n".join(
            [
                "## Epochs to reach a threshold",
                f"Threshold: val/acc ≥ {fmt(threshold, True)} ({THRESHOLD_FRACTION:.0%} of the weaker experiment's best). "
                "A completed trial whose best epoch is its last was still improving when training ended.",
                table(frame),
            ]
        )
    )
    ra, rb = frame.iloc[0], frame.iloc[1]
    out.claims.append(
        f"Epochs to val/acc ≥ {fmt(threshold, True)} for the best trial: {a.name} {fmt(ra.iloc[1])}, {b.name} "
        f"{fmt(rb.iloc[1])}; median epoch-1 train/loss {fmt(ra['median epoch-1 train/loss'], True)} vs "
        f"{fmt(rb['median epoch-1 train/loss'], True)}; completed trials still improving at their last epoch: "
        f"{ra['completed trials best at last epoch']} vs {rb['completed trials best at last epoch']}."
    )


def early_stopping_bias(a: Experiment, b: Experiment, out: Findings) -> None:
    rows = []
    for exp in (a, b):
        cut = still_improving(exp)
        known = cut["improving"].dropna() if len(cut) else pd.Series(dtype=bool)
        epoch1 = exp.epochs[exp.epochs["epoch"] == 1]
        rows.append(
            {
                "experiment": exp.name,
                "scheduler": exp.meta.get("tune", {}).get("scheduler"),
                "first rung (epoch)": int(cut["epoch"].iloc[0]) if len(cut) else None,
                "stopped there": len(cut),
                "still improving": int(known.sum()),
                "trend known": len(known),
                "share still improving": float(known.mean()) if len(known) else float("nan"),
                "trials": len(exp.trials),
                "median epoch-1 val/acc": float(epoch1["val/acc"].median()) if len(epoch1) else float("nan"),
            }
        )
    frame = pd.DataFrame(rows)
    out.sections.append(
        "\n\n".join(
            [
                "## Did early stopping cull the slower starter?",
                "Trials the scheduler stopped at its first rung whose last epoch beat every earlier one (still improving when "
                "cut; after a single epoch the trend is unknown). A model that starts slower loses more trials this way.",
                table(frame),
            ]
        )
    )
    ra, rb = frame.iloc[0], frame.iloc[1]
    slower = a.name if ra["median epoch-1 val/acc"] < rb["median epoch-1 val/acc"] else b.name
    out.claims.append(
        f"Stopped at the first rung while still improving: {a.name} {ra['still improving']}/{ra['trials']} trials, "
        f"{b.name} {rb['still improving']}/{rb['trials']}; the slower starter by median epoch-1 val/acc is {slower} "
        f"({fmt(ra['median epoch-1 val/acc'], True)} vs {fmt(rb['median epoch-1 val/acc'], True)})."
    )


def size_and_cost(a: Experiment, b: Experiment, out: Findings) -> None:
    rows = []
    for exp in (a, b):
        best = _best_trial(exp)
        healthy = (
            exp.epochs[exp.epochs["status"].isin(["running", "completed"])] if "status" in exp.epochs else exp.epochs
        )
        rows.append(
            {
                "experiment": exp.name,
                "model": best.get("config.model.name"),
                "params (best)": best.get("model/params"),
                "FLOPs/image (best)": best.get("model/flops"),
                "median params": float(exp.trials["model/params"].median()),
                "median time/epoch_s": float(healthy["time/epoch_s"].median()) if len(healthy) else float("nan"),
                "median img/s": float(healthy["throughput/img_s"].median()) if len(healthy) else float("nan"),
            }
        )
    frame = pd.DataFrame(rows)
    out.sections.append("\n\n".join(["## Parameters and FLOPs", table(frame)]))
    ra, rb = frame.iloc[0], frame.iloc[1]
    ratio = rb["params (best)"] / ra["params (best)"] if ra["params (best)"] else float("nan")
    out.claims.append(
        f"{b.name}'s best model has {fmt(rb['params (best)'])} parameters and {fmt(rb['FLOPs/image (best)'])} FLOPs "
        f"per image vs {fmt(ra['params (best)'])} and {fmt(ra['FLOPs/image (best)'])} for {a.name} "
        f"({fmt(ratio)}× the parameters)."
    )


def explain_pair(a: Experiment, b: Experiment) -> str:
    """The full markdown explanation of A vs B."""
    out = Findings()
    for section in (
        best_vs_best,
        same_hyperparameters,
        sensitivity,
        train_val_gap,
        epochs_to_threshold,
        early_stopping_bias,
        size_and_cost,
    ):
        section(a, b, out)
    header = (
        f"# Why {a.name} and {b.name} differ\n\n"
        f"A: `{a.path}` ({a.meta.get('preset')}, {len(a.trials)} trials); "
        f"B: `{b.path}` ({b.meta.get('preset')}, {len(b.trials)} trials). "
        "Selection used validation accuracy; the test set was measured once after each search."
    )
    conclusion = "## Conclusion\n\n" + "\n".join(f"- {claim}" for claim in out.claims)
    return "\n\n".join([header, *out.sections, conclusion]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.explain",
        description="Explain the gap between two experiments, or an ablation grid's factors.",
    )
    parser.add_argument(
        "experiments", nargs="+", type=Path, help="two experiment folders (A B), or one with --ablation"
    )
    parser.add_argument(
        "--ablation", action="store_true", help="attribute one experiment's outcome to its searched factors"
    )
    parser.add_argument(
        "--metric", help="ablation outcome column in trials.parquet (default: the experiment's best metric)"
    )
    parser.add_argument(
        "--out", type=Path, help="markdown file to write (default: explain-<A>-vs-<B>.md or ablation.md in A's folder)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    expected = 1 if args.ablation else 2
    if len(args.experiments) != expected:
        parser.error(
            f"expected {expected} experiment folder(s){' with --ablation' if args.ablation else ''}, "
            f"got {len(args.experiments)}"
        )
    try:
        exps = [load_experiment(path) for path in args.experiments]
    except ResultsError as err:
        print(f"analysis.explain: error: {err}", file=sys.stderr)
        return 2
    if args.ablation:
        try:
            text = ablation_markdown(exps[0], metric=args.metric)
        except ValueError as err:
            print(f"analysis.explain: error: {err}", file=sys.stderr)
            return 2
        path = args.out or exps[0].path / "ablation.md"
    else:
        text = explain_pair(*exps)
        path = args.out or exps[0].path / f"explain-{exps[0].name}-vs-{exps[1].name}.md"
    print(text)
    Path(path).write_text(text)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
