"""Every preset in smoke mode, end to end: real Ray, searcher, scheduler, results store.

    .venv/bin/python -m pytest tests/test_smoke_presets.py -q

Smoke mode (``tune.py --smoke``) shrinks each preset to at most two trials of at most
two epochs on a few dozen small images; the whole module runs in a few minutes on
2 CPU cores. A preset whose config, model, data set, searcher or scheduler is broken
fails here as an errored trial or an error from ``tune.main``.
"""

from __future__ import annotations

import pytest

import tune
from analysis.results import load_experiment
from search_spaces.loader import preset_names


@pytest.mark.parametrize("name", preset_names())
def test_preset_runs_in_smoke_mode(name, ray_session, all_data_dir, tmp_path, capsys):
    code = tune.main(
        [
            "--space",
            name,
            "--smoke",
            "--quiet",
            "--no-download",
            "--data-dir",
            str(all_data_dir),
            "--storage-path",
            str(tmp_path),
            "--name",
            name,
        ]
    )
    assert code == 0, capsys.readouterr().err
    experiment = load_experiment(tmp_path / name)
    trials = experiment.trials
    assert 1 <= len(trials) <= 2
    # Every trial ran to its end or was stopped by the scheduler: nothing errored, diverged or ran out of memory.
    assert set(trials["status"]) <= {"completed", "stopped"}, trials[["trial_id", "status", "error"]].to_string()
    assert (trials["epochs_run"] >= 1).all()
    assert len(experiment.final) == 1  # the best trial's checkpoint was tested once
    assert experiment.meta["smoke"] is True
