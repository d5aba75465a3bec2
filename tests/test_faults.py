"""Trials that fail: out of memory, divergence, a crash mid-epoch, a corrupt checkpoint.

    python -m pytest tests/test_faults.py -q          # one small search, about 30-60 s on 2 CPUs

One grid search over ``fault_probe`` (tests/fault_models.py), one trial per fault,
through tune.py and real Ray workers: the out-of-memory trial ends as ``oom``
without a retry, the NaN trial stops at once as ``diverged``, the crashed trial is
retried from its last checkpoint (not from epoch 1) and completes, the healthy one
completes, and the summary lists the failures.
"""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from pathlib import Path

import pytest

import trainables.adapter
import tune
from analysis.results import load_experiment
from tests.fault_models import train_trial_with_fault_models

EPOCHS = 3
BATCHES_BEFORE_FAULT = 10  # 400 digits: 7 batches of 64 per epoch, so every fault strikes in epoch 2


def fault_preset(marker_dir: Path) -> str:
    return textwrap.dedent(f"""\
        # faults — one trial per fault of the fault_probe test model
        description: fault handling test search
        base:
          data: {{name: digits, val_fraction: 0.15, train_limit: 400}}
          model: {{name: fault_probe, fault_after_batches: {BATCHES_BEFORE_FAULT}, marker_dir: "{marker_dir}"}}
          optimizer: {{name: sgd, lr: 0.05}}
          epochs: {EPOCHS}
          batch_size: 64
          seed: 0
        space:
          model.fault: {{grid: [none, oom, nan, crash_once]}}
        tune:
          metric: val/acc
          mode: max
          searcher: grid
          scheduler: {{name: fifo}}
          num_samples: 1
          max_concurrent_trials: 2
          max_failures: 1
          resources: {{cpus: 1, gpus: 0}}
          top_k_test: 1
        """)


@pytest.fixture(scope="module")
def fault_search(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    (root / "markers").mkdir()
    preset = root / "faults.yaml"
    preset.write_text(fault_preset(root / "markers"))
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(trainables.adapter, "train_trial", train_trial_with_fault_models)
        code = tune.main(
            ["--space", str(preset), "--storage-path", str(root / "results"), "--name", "faults", "--quiet"]
        )
    assert code == 0, out.getvalue()
    exp = load_experiment(root / "results" / "faults")
    by_fault = {row["config.model.fault"]: row for row in exp.trials.to_dict("records")}
    return exp, by_fault, out.getvalue(), root


def ray_rows(exp, trial_id: str) -> list[dict]:
    return [json.loads(line) for line in (exp.path / trial_id / "result.json").read_text().splitlines()]


def test_every_fault_ends_with_its_own_status(fault_search):
    exp, by_fault, _, _ = fault_search
    assert len(exp.trials) == 4
    assert {fault: row["status"] for fault, row in by_fault.items()} == {
        "none": "completed",
        "oom": "oom",
        "nan": "diverged",
        "crash_once": "completed",
    }


def test_out_of_memory_ends_the_trial_without_retrying(fault_search):
    exp, by_fault, _, _ = fault_search
    oom = by_fault["oom"]
    assert oom["error"] == ""  # ended cleanly, not as a Ray failure that max_failures would retry
    rows = ray_rows(exp, oom["trial_id"])
    assert [r["epoch"] for r in rows] == [1, 2]  # one healthy epoch, then the oom report; no second attempt
    assert rows[-1]["status"] == "oom" and rows[-1]["val/acc"] == 0.0


def test_non_finite_loss_stops_the_trial_at_once(fault_search):
    exp, by_fault, _, _ = fault_search
    nan = by_fault["nan"]
    epochs = exp.epochs[exp.epochs["trial_id"] == nan["trial_id"]]
    assert epochs["epoch"].tolist() == [1, 2]  # no epoch after the one that diverged
    assert epochs["status"].tolist() == ["running", "diverged"]
    assert nan["val/acc_best"] == pytest.approx(epochs["val/acc"].iloc[0])  # the healthy epoch still counts


def test_crashed_trial_resumes_from_its_last_checkpoint(fault_search):
    exp, by_fault, _, root = fault_search
    crashed = by_fault["crash_once"]
    assert (root / "markers" / "crashed").read_text() == "crashed once"  # the crash really happened
    rows = ray_rows(exp, crashed["trial_id"])
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # epoch 1 was not trained again
    assert rows[1]["iterations_since_restore"] == 1  # epoch 2 is the first report after the restore
    epochs = exp.epochs[exp.epochs["trial_id"] == crashed["trial_id"]]
    assert epochs["epoch"].tolist() == [1, 2, 3]


def test_summary_lists_the_failed_trials(fault_search):
    _, by_fault, out, _ = fault_search
    assert f"diverged: {by_fault['nan']['trial_id']}" in out
    assert f"oom: {by_fault['oom']['trial_id']}" in out
    assert "4 trials" in out


def test_corrupt_latest_checkpoint_fails_the_trial_clearly(monkeypatch, tmp_path):
    """Resuming from a damaged checkpoint raises CheckpointError; it never restarts from epoch 1."""
    from ray import tune as ray_tune

    from search_spaces import load_preset
    from trainables.data import load_dataset
    from trainables.recipe import CHECKPOINT_FILE, CheckpointError

    preset = load_preset("quickstart", ["epochs=2"])
    splits = load_dataset(preset.base.data).without_test()
    checkpoint_dir = tmp_path / "checkpoint_000003"
    checkpoint_dir.mkdir()
    (checkpoint_dir / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 truncated by a full disk")
    reports = []
    monkeypatch.setattr(
        trainables.adapter.tune, "get_checkpoint", lambda: ray_tune.Checkpoint.from_directory(str(checkpoint_dir))
    )
    monkeypatch.setattr(trainables.adapter.tune, "report", lambda metrics, **kw: reports.append(metrics))
    with pytest.raises(CheckpointError, match=r"trial_state\.pt: checkpoint is corrupt or unreadable"):
        trainables.adapter.train_trial(preset.base.to_flat(), data=splits)
    assert reports == []  # not a single epoch trained from scratch


def test_restored_finished_trial_reports_its_final_result_again(ray_session, monkeypatch, tmp_path):
    """A driver killed between a trial's last report and recording it finished restores the trial at its
    final checkpoint: the trial must tell its final result again (no training), not end without one."""
    import shutil

    from ray import tune as ray_tune

    from search_spaces import load_preset
    from trainables.data import load_dataset

    preset = load_preset("quickstart", ["epochs=1"])
    splits = load_dataset(preset.base.data).without_test()
    saved, reports = tmp_path / "checkpoint", []

    def report(metrics, checkpoint=None):
        reports.append(metrics)
        if checkpoint is not None:
            shutil.copytree(checkpoint.path, saved, dirs_exist_ok=True)

    monkeypatch.setattr(trainables.adapter.tune, "report", report)
    monkeypatch.setattr(trainables.adapter.tune, "get_checkpoint", lambda: None)
    trainables.adapter.train_trial(preset.base.to_flat(), data=splits)
    (final,) = reports
    assert final["status"] == "completed"

    reports.clear()
    monkeypatch.setattr(
        trainables.adapter.tune, "get_checkpoint", lambda: ray_tune.Checkpoint.from_directory(str(saved))
    )
    trainables.adapter.train_trial(preset.base.to_flat(), data=splits)
    assert reports == [final]
