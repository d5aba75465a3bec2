"""The results store: what a search leaves behind, and the only thing analysis reads.

``<results>/<experiment>/``:

- ``trials.parquet``  one row per trial: ``config.*`` columns, final and best metrics,
  ``status`` (completed, stopped, diverged, oom, error), ``epochs_run``;
- ``epochs.parquet``  one row per trial-epoch with every reported metric;
- ``final.parquet``   test-set results (top-k best checkpoints, confirm re-runs);
- ``experiment.json`` preset text, resolved config, git commit, package versions, hardware.

    from analysis.results import load_experiment
    exp = load_experiment("results/quickstart-20261122-101500")
    exp.trials.sort_values("val/acc_best", ascending=False).head()
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
FINAL_FILE = "final.parquet"
EXPERIMENT_FILE = "experiment.json"

EPOCH_METRICS = (
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/acc_best",
    "lr",
    "time/epoch_s",
    "throughput/img_s",
)
TRIAL_STATUSES = ("completed", "stopped", "diverged", "oom", "error")


class ResultsError(FileNotFoundError):
    """An experiment folder that lacks the results store's files."""


@dataclass(frozen=True)
class Experiment:
    path: Path
    trials: pd.DataFrame
    epochs: pd.DataFrame
    final: pd.DataFrame
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.meta.get("name", self.path.name)

    @property
    def metric(self) -> str:
        return self.meta.get("tune", {}).get("metric", "val/acc")

    @property
    def mode(self) -> str:
        return self.meta.get("tune", {}).get("mode", "max")

    def config_columns(self) -> list[str]:
        return [c for c in self.trials.columns if c.startswith("config.")]

    def searched_columns(self) -> list[str]:
        return [f"config.{p}" for p in self.meta.get("searched", []) if f"config.{p}" in self.trials.columns]

    def leaderboard(self, top: int | None = None) -> pd.DataFrame:
        """Trials sorted best first by the preset's metric (its best epoch)."""
        key = best_column(self.metric)
        ranked = self.trials.sort_values(key, ascending=self.mode == "min", na_position="last")
        return ranked.head(top) if top else ranked


def best_column(metric: str) -> str:
    """The trials.parquet column holding a trial's best value of ``metric``."""
    return "val/acc_best" if metric in ("val/acc", "val/acc_best") else f"{metric}_best"


def _write_atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_results(
    directory: Path,
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    meta: dict[str, Any],
    final: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write the store atomically (each file replaced whole); returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "trials": directory / TRIALS_FILE,
        "epochs": directory / EPOCHS_FILE,
        "experiment": directory / EXPERIMENT_FILE,
    }
    _write_atomic_parquet(trials, paths["trials"])
    _write_atomic_parquet(epochs, paths["epochs"])
    if final is not None:
        paths["final"] = directory / FINAL_FILE
        _write_atomic_parquet(final, paths["final"])
    tmp = paths["experiment"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    os.replace(tmp, paths["experiment"])
    return paths


def load_experiment(directory: str | Path) -> Experiment:
    """Read a results store; a missing file is an error naming it."""
    directory = Path(directory).expanduser().resolve()
    for name in (TRIALS_FILE, EPOCHS_FILE, EXPERIMENT_FILE):
        if not (directory / name).is_file():
            raise ResultsError(
                f"{directory}: missing {name}; point at an experiment folder written by tune.py "
                "(it holds trials.parquet, epochs.parquet and experiment.json)"
            )
    final_path = directory / FINAL_FILE
    final = pd.read_parquet(final_path) if final_path.is_file() else pd.DataFrame()
    return Experiment(
        path=directory,
        trials=pd.read_parquet(directory / TRIALS_FILE),
        epochs=pd.read_parquet(directory / EPOCHS_FILE),
        final=final,
        meta=json.loads((directory / EXPERIMENT_FILE).read_text()),
    )
