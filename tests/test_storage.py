"""--storage-path as a URI: Ray writes trials and checkpoints through its filesystem layer, the results store stays local.

A ``file://`` URI takes the same code path as ``s3://`` or ``gs://`` (pyarrow filesystems),
without a cloud account.
"""

from __future__ import annotations

import json

import tune
from analysis.results import load_experiment


def test_uri_storage_keeps_trials_remote_and_results_local(ray_session, tmp_path):
    remote, local = tmp_path / "bucket", tmp_path / "local"
    code = tune.main([
        "--space", "quickstart", "--smoke", "--quiet", "--name", "uri",
        "--storage-path", f"file://{remote}", "--results-dir", str(local),
    ])  # fmt: skip
    assert code == 0
    experiment = load_experiment(local / "uri")
    assert len(experiment.trials) == 2  # smoke size
    # Ray's experiment state and every trial's checkpoints went to the URI, not the results folder.
    assert list((remote / "uri").glob("experiment_state-*.json"))
    for trial_id in experiment.trials["trial_id"]:
        assert list((remote / "uri" / trial_id).glob("checkpoint_*/trial_state.pt")), trial_id
        assert not (local / "uri" / trial_id).exists()
    # The test measurement read the best checkpoint back through the URI.
    assert experiment.final["test/acc"].between(0.0, 1.0).all() and len(experiment.final) == 1
    assert (local / "uri" / "optuna.journal").is_file()
    assert json.loads((local / "uri" / tune.RUN_FILE).read_text())["space"] == "quickstart"
