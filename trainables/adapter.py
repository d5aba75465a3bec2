"""The only Ray Tune code in ``trainables``: one trial = ``TrialRun`` + per-epoch report and checkpoint.

``train_trial`` is the function Tune runs. It restores from the trial's last
checkpoint when there is one, reports one result per epoch (see
``TrialRun.run_epoch``), checkpoints every epoch, and ends cleanly, never by
crashing, when the loss diverges (``status: diverged``) or memory runs out
(``status: oom``), reporting the finite worst value of every metric.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables.config import TrainConfig
from trainables.data import DataSplits
from trainables.loop import DivergedError
from trainables.recipe import WORST_LOSS, TrialRun

log = logging.getLogger(__name__)

RESULT_FILE = "epoch_result.json"  # the epoch's reported metrics, kept with its checkpoint


def train_trial(config: dict[str, Any], data: DataSplits, gpu_fraction: float = 0.0) -> None:
    """Ray Tune function trainable: ``config`` is the flat dotted trial config."""
    train_config = TrainConfig.from_flat(config)
    run: TrialRun | None = None
    try:
        run = TrialRun(train_config, data, gpu_memory_fraction=gpu_fraction or None)
        checkpoint = tune.get_checkpoint()
        last_result: dict[str, Any] | None = None
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                run.load(Path(directory))
                result_file = Path(directory) / RESULT_FILE
                last_result = json.loads(result_file.read_text()) if result_file.is_file() else None
            log.info("resumed at epoch %d", run.epoch)
        if run.finished and last_result is not None:
            # The driver stopped between this trial's last report and recording it as finished:
            # tell the restored driver the final result again instead of ending without one.
            tune.report(last_result)
        node_id = ray.get_runtime_context().get_node_id()  # which node ran each epoch (IPs repeat in containers)
        while not run.finished:
            metrics = {**run.run_epoch(), "node_id": node_id}
            with tempfile.TemporaryDirectory() as directory:
                run.save(Path(directory))
                (Path(directory) / RESULT_FILE).write_text(json.dumps(metrics))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
    except DivergedError as err:
        log.warning("trial diverged: %s", err)
        tune.report(_final_result("diverged", run, train_config))
    except torch.OutOfMemoryError as err:
        log.warning("trial ran out of memory: %s", str(err).splitlines()[0])
        epoch_info = _final_result("oom", run, train_config)
        run = None
        _free_memory()
        tune.report(epoch_info)


def _final_result(status: str, run: TrialRun | None, config: TrainConfig) -> dict[str, Any]:
    epoch = run.epoch + 1 if run is not None else 1
    return {
        "train/loss": WORST_LOSS,
        "train/acc": 0.0,
        "val/loss": WORST_LOSS,
        "val/acc": 0.0,
        "val/acc_best": run.best_val_acc if run is not None else 0.0,
        "lr": config.optimizer.lr,
        "epoch": epoch,
        "time/epoch_s": 0.0,
        "throughput/img_s": 0.0,
        "model/params": run.num_params if run is not None else 0,
        "model/flops": run.flops if run is not None else 0,
        "status": status,
    }


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
