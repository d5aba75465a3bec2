"""Search bookkeeping: what Optuna is told after a real ASHA search, and every searcher/scheduler running.

    .venv/bin/python -m pytest tests/test_search.py -q

The ASHA search runs the quickstart preset (bundled digits, no download) for a few
seconds per trial; the other searches are two-trial runs of the same preset.
"""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

import tune
from analysis.results import load_experiment
from search_spaces import load_preset
from search_spaces.domains import param_space
from search_spaces.optuna_searcher import STUDY_NAME, HonestOptunaSearch

# Small and fast, but every trial still learns: the quickstart CNN on 600 digits.
FAST = ["--quiet", "--set", "data.train_limit=600", "--set", "tune.top_k_test=1"]


def _search(storage, name, *args):
    code = tune.main(["--space", "quickstart", "--storage-path", str(storage), "--name", name, *FAST, *args])
    assert code == 0
    return load_experiment(storage / name)


def _open_journal(path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=JournalStorage(JournalFileBackend(str(path))))


@pytest.fixture(scope="module")
def asha_search(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("asha")
    # Rungs at epoch 1 only (max 2, grace 1, factor 2): about half the trials are stopped there.
    experiment = _search(
        storage,
        "asha",
        "--num-samples",
        "8",
        "--max-epochs",
        "2",
        "--searcher",
        "optuna",
        "--scheduler",
        "asha",
        "--set",
        "tune.scheduler.grace_period_epochs=1",
        "--set",
        "tune.scheduler.reduction_factor=2",
    )
    return experiment, _open_journal(storage / "asha" / "optuna.journal")


def test_asha_stopped_trials_are_pruned_in_optuna(asha_search):
    experiment, study = asha_search
    trials = experiment.trials
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 1, "ASHA stopped nothing; the bookkeeping below would be untested"
    by_state = {state: study.get_trials(states=(state,)) for state in TrialState}
    assert len(by_state[TrialState.PRUNED]) == len(stopped)
    assert len(by_state[TrialState.COMPLETE]) == (trials["status"] == "completed").sum()
    assert by_state[TrialState.RUNNING] == [] and by_state[TrialState.WAITING] == []
    assert len(study.trials) == len(trials) == 8


def test_optuna_trials_carry_their_per_epoch_values(asha_search):
    experiment, study = asha_search
    epochs = experiment.epochs.set_index(["trial_id", "epoch"])["val/acc"]
    runs = experiment.trials.set_index("trial_id")
    for trial in study.trials:
        ray_id = trial.user_attrs["ray_trial_id"]
        values = trial.intermediate_values
        assert sorted(values) == list(range(1, int(runs.loc[ray_id, "epochs_run"]) + 1))
        for epoch, value in values.items():
            assert value == pytest.approx(epochs[(ray_id, epoch)])
        if trial.state == TrialState.PRUNED:
            assert runs.loc[ray_id, "status"] == "stopped" and len(values) == 1
            assert trial.user_attrs["tunelab_outcome"] == "stopped by scheduler"
        else:
            assert trial.state == TrialState.COMPLETE and runs.loc[ray_id, "status"] == "completed"
            assert trial.value == pytest.approx(values[2])  # the final epoch's score, not an early one


def test_journal_supports_importance_analysis(asha_search):
    _, study = asha_search
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 2
    importances = optuna.importance.get_param_importances(study)
    assert set(importances) <= set(load_preset("quickstart").space)
    assert "optimizer.lr" in importances
    assert math.isclose(sum(importances.values()), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize(
    ("searcher", "scheduler", "extra"),
    [
        ("random", "hyperband", []),
        ("optuna", "median", []),
        ("optuna", "fifo", []),
        # The grid searcher needs every entry to be grid or choice: a two-value lr grid, other values pinned.
        (
            "grid",
            "fifo",
            [
                "--set",
                "space.optimizer.lr={grid: [0.02, 0.1]}",
                "--set",
                "optimizer.weight_decay=0.0005",
                "--set",
                "model.dropout=0.1",
                "--num-samples",
                "1",
            ],
        ),
    ],
)
def test_searcher_and_scheduler_run(searcher, scheduler, extra, ray_session, tmp_path):
    args = ["--num-samples", "2", "--max-epochs", "2", "--searcher", searcher, "--scheduler", scheduler, *extra]
    experiment = _search(tmp_path, f"{searcher}-{scheduler}", *args)
    trials = experiment.trials
    assert len(trials) == 2
    assert set(trials["status"]) <= {"completed", "stopped"}
    assert experiment.meta["tune"]["searcher"] == searcher and experiment.meta["tune"]["scheduler"] == scheduler
    if searcher == "grid":
        assert sorted(trials["config.optimizer.lr"]) == [0.02, 0.1]
    if scheduler == "fifo":
        assert (trials["epochs_run"] == 2).all()


def test_pbt_runs_with_checkpoint_exploitation(ray_session, tmp_path):
    # Every epoch is a perturbation point; an exploiting trial restores another's checkpoint,
    # which must still exist (PBT keeps every checkpoint), so no trial errors.
    experiment = _search(
        tmp_path,
        "pbt",
        "--num-samples",
        "2",
        "--max-epochs",
        "4",
        "--searcher",
        "random",
        "--scheduler",
        "pbt",
        "--set",
        "schedule.name=none",
        "--set",
        "tune.scheduler.perturbation_interval_epochs=1",
    )
    trials = experiment.trials
    assert set(trials["status"]) == {"completed"}, trials[["trial_id", "status", "error"]].to_string()
    assert (trials["epochs_run"] == 4).all()
    assert experiment.meta["tune"]["scheduler"] == "pbt"


# ------------------------------------------------------- outcomes told to Optuna, one by one


@pytest.fixture
def searcher(tmp_path):
    preset = load_preset("quickstart")
    return HonestOptunaSearch(param_space(preset), "val/acc", "max", tmp_path / "optuna.journal", max_epochs=3, seed=0)


def _epoch(value, epoch, status="running"):
    return {"val/acc": value, "epoch": epoch, "status": status}


@pytest.mark.parametrize(
    ("final", "error", "state", "outcome"),
    [
        (_epoch(0.9, 3, "completed"), False, TrialState.COMPLETE, "completed"),
        (_epoch(0.5, 1), False, TrialState.PRUNED, "stopped by scheduler"),
        ({**_epoch(0.0, 2, "diverged"), "val/loss": 1e9}, False, TrialState.COMPLETE, "diverged"),
        (_epoch(0.0, 2, "oom"), False, TrialState.FAIL, "oom"),
        (None, True, TrialState.FAIL, "error"),
    ],
)
def test_each_outcome_reaches_optuna_honestly(searcher, final, error, state, outcome):
    config = searcher.suggest("t1")
    assert 0.0003 <= config["optimizer.lr"] <= 0.3 and config["data.name"] == "digits"
    searcher.on_trial_result("t1", _epoch(0.4, 1))
    searcher.on_trial_complete("t1", final, error=error)
    (trial,) = searcher.study.trials
    assert trial.state == state and trial.user_attrs["tunelab_outcome"] == outcome
    assert trial.intermediate_values[1] == 0.4
    if outcome == "diverged":
        assert trial.value == 0.0  # the worst accuracy: the config is genuinely bad
    if outcome in ("diverged", "oom"):
        assert list(trial.intermediate_values) == [1]  # the placeholder result is not an epoch's score
    if outcome == "completed":
        assert trial.value == 0.9 and trial.intermediate_values[3] == 0.9


def test_trials_lost_in_a_driver_crash_are_failed(searcher, tmp_path):
    searcher.suggest("kept")
    state = searcher.get_state()  # what Ray saved before the crash
    searcher.suggest("lost")
    restored = HonestOptunaSearch(
        param_space(load_preset("quickstart")), "val/acc", "max", tmp_path / "optuna.journal", max_epochs=3, seed=0
    )
    restored.set_state(state)
    restored.suggest("new")
    restored.on_trial_complete("kept", _epoch(0.8, 3, "completed"))
    states = {t.user_attrs["ray_trial_id"]: t.state for t in restored.study.trials}
    assert states == {"kept": TrialState.COMPLETE, "lost": TrialState.FAIL, "new": TrialState.RUNNING}
