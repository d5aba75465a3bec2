"""What the scheduler did: how many trials each ASHA rung kept, and who was cut while improving.

ASHA (one bracket) checks a trial at epochs ``grace · η^k`` for ``k = 0 … ⌊log_η(max/grace)⌋``
(Ray's ``_Bracket``), so a trial stopped at a rung has ``epochs_run`` equal to that rung and
``status == "stopped"``. Only trials that ended for the scheduler's reasons count as cut;
diverged, out-of-memory and errored trials are listed apart.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.results import Experiment

RUNG_SCHEDULERS = ("asha",)


def rung_epochs(grace: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """ASHA's rung milestones below ``max_epochs`` (Ray's bracket with s=0)."""
    grace = min(max(int(grace), 1), max_epochs)
    count = int(math.log(max_epochs / grace) / math.log(reduction_factor) + 1)
    milestones = sorted({int(round(grace * reduction_factor**k)) for k in range(count)})
    return [m for m in milestones if m < max_epochs]


def rung_table(exp: Experiment) -> pd.DataFrame:
    """Per rung (and the final epoch): trials that reached it, were cut there, and went on."""
    tune = exp.meta.get("tune", {})
    max_epochs = int(tune.get("max_epochs") or exp.trials["epochs_run"].max() or 1)
    trials = exp.trials
    if tune.get("scheduler") in RUNG_SCHEDULERS:
        rungs = rung_epochs(tune.get("grace_period_epochs", 1), float(tune.get("reduction_factor", 3)), max_epochs)
    else:
        rungs = []
    rows = []
    for epoch in [*rungs, max_epochs]:
        reached = trials[trials["epochs_run"] >= epoch]
        cut = reached[(reached["epochs_run"] == epoch) & (reached["status"] == "stopped")]
        went_on = reached[reached["epochs_run"] > epoch]
        rows.append(
            {
                "epoch": epoch,
                "kind": "rung" if epoch in rungs else "max_epochs",
                "reached": len(reached),
                "stopped_here": len(cut),
                "continued": len(went_on) if epoch in rungs else 0,
                "completed": int((reached["status"] == "completed").sum()) if epoch == max_epochs else 0,
                "kept_share": len(went_on) / len(reached) if epoch in rungs and len(reached) else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def still_improving(exp: Experiment, at_epoch: int | None = None) -> pd.DataFrame:
    """Trials the scheduler stopped (at ``at_epoch``, default its first rung) whose last
    epoch beat every earlier one: they were still improving when cut (``None`` after one epoch)."""
    tune = exp.meta.get("tune", {})
    stopped = exp.trials[exp.trials["status"] == "stopped"]
    if at_epoch is None:
        max_epochs = int(tune.get("max_epochs") or 1)
        rungs = rung_epochs(tune.get("grace_period_epochs", 1), float(tune.get("reduction_factor", 3)), max_epochs)
        at_epoch = rungs[0] if rungs else int(stopped["epochs_run"].min()) if len(stopped) else 0
    stopped = stopped[stopped["epochs_run"] == at_epoch]
    rows = []
    for trial_id in stopped["trial_id"]:
        curve = exp.epochs[exp.epochs["trial_id"] == trial_id].sort_values("epoch")
        if curve.empty:
            continue
        last = curve.iloc[-1]
        rows.append(
            {
                "trial_id": trial_id,
                "epoch": int(last["epoch"]),
                "val/acc": float(last["val/acc"]),
                # One epoch says nothing about a trend: a trial cut at epoch 1 is "unknown", not improving.
                "improving": bool(last["val/acc"] > curve["val/acc"].iloc[:-1].max()) if len(curve) > 1 else None,
                "val/acc_gain_last": float(last["val/acc"] - curve["val/acc"].iloc[-2])
                if len(curve) > 1
                else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=["trial_id", "epoch", "val/acc", "improving", "val/acc_gain_last"])
