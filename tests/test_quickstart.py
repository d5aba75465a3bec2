"""The quickstart search end to end: real Ray, real Optuna, real Parquet, smoke size."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import tune
from analysis.results import load_experiment


@pytest.fixture(scope="module")
def quickstart_experiment(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("results")
    # Smoke size, but enough epochs and trials that only a working model clears the bar below.
    code = tune.main(
        [
            "--space",
            "quickstart",
            "--storage-path",
            str(storage),
            "--name",
            "qs",
            "--quiet",
            "--num-samples",
            "4",
            "--max-epochs",
            "6",
            "--set",
            "tune.top_k_test=2",
        ]
    )
    assert code == 0
    return load_experiment(storage / "qs")


def test_quickstart_writes_one_row_per_trial(quickstart_experiment):
    trials = quickstart_experiment.trials
    assert len(trials) == 4
    assert trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "stopped"}  # nothing errored, diverged or ran out of memory
    for column in ("val/acc_best", "epochs_run", "config.optimizer.lr", "config.batch_size", "model/params"):
        assert column in trials, column


def test_quickstart_epochs_match_trials(quickstart_experiment):
    trials, epochs = quickstart_experiment.trials, quickstart_experiment.epochs
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    per_trial = epochs.groupby("trial_id")["epoch"].max()
    assert per_trial.to_dict() == trials.set_index("trial_id")["epochs_run"].to_dict()
    best = epochs.groupby("trial_id")["val/acc"].max()
    assert best.to_dict() == pytest.approx(trials.set_index("trial_id")["val/acc_best"].to_dict())
    for column in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "time/epoch_s", "throughput/img_s"):
        assert column in epochs, column


def test_quickstart_learns(quickstart_experiment):
    # Chance is 0.10; a broken model, pipeline or label order cannot get near this.
    assert quickstart_experiment.trials["val/acc_best"].max() >= 0.9


def test_test_split_measured_once_after_selection(quickstart_experiment):
    trials, final = quickstart_experiment.trials, quickstart_experiment.final
    assert len(final) == 2
    ranked = trials.sort_values("val/acc_best", ascending=False)["trial_id"].tolist()
    # The tested trials are the top-2 by validation accuracy, whatever their test accuracy.
    assert final.sort_values("rank")["trial_id"].tolist() == ranked[:2]
    assert (final["test_images"] == quickstart_experiment.meta["data"]["test_images"]).all()
    assert final["test/acc"].between(0.8, 1.0).all()
    assert "test/acc" not in quickstart_experiment.epochs  # no test metric during the search


def test_experiment_json_records_provenance(quickstart_experiment):
    meta = json.loads((quickstart_experiment.path / "experiment.json").read_text())
    assert meta["preset"] == "quickstart"
    assert "optimizer.lr" in meta["searched"]
    assert meta["base"]["model.name"] == "small_cnn"
    assert meta["packages"]["ray"] and meta["packages"]["torch"]
    assert meta["hardware"]["cpu_count"] >= 1
    assert "quickstart" in meta["preset_text"]
    assert pd.read_parquet(quickstart_experiment.path / "trials.parquet").shape[0] == 4


def test_trials_never_receive_the_test_split(quickstart_experiment):
    from search_spaces import load_preset
    from trainables.data import load_dataset

    splits = load_dataset(load_preset("quickstart").base.data)
    assert len(splits.without_test().test_labels) == 0
    assert len(splits.test_labels) > 0
