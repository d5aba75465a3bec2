"""One trial's training state, built from a ``TrainConfig``: model, optimizer, schedule, pipeline, data.

Pure PyTorch, shared by the Ray adapter, the single-trial mode and benchmarks:

    run = TrialRun(config, splits)            # splits: trainables.data.DataSplits
    while not run.finished:
        metrics = run.run_epoch()              # the per-epoch result dict
    run.save(path); run.load(path)             # exact resume (epoch-seeded RNG)

Randomness is re-seeded from (seed, epoch) at the start of every epoch, so a run
restored from the checkpoint of epoch k trains epoch k+1 exactly as the
uninterrupted run would (on CPU; GPU kernels may be non-deterministic).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.config import TrainConfig
from trainables.data import DataSplits
from trainables.loop import EpochStats, evaluate, train_epoch
from trainables.models import count_parameters, create_model
from trainables.optim import create_optimizer, create_schedule
from trainables.pipeline import BatchPipeline

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "trial_state.pt"
CHECKPOINT_FORMAT = "tunelab-trial-1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: unreadable, corrupt, or from another model."""


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63)


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    # np.array copies: arrays from Ray's object store are read-only.
    return torch.from_numpy(np.array(array, copy=True)).to(device)


class TrialRun:
    """Model, optimizer, schedule and device-resident data for one training config."""

    def __init__(
        self,
        config: TrainConfig,
        data: DataSplits,
        device: torch.device | str | None = None,
        gpu_memory_fraction: float | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.device = torch.device(device) if device is not None else pick_device()
        cuda = self.device.type == "cuda"
        if cuda and gpu_memory_fraction is not None and 0 < gpu_memory_fraction < 1:
            torch.cuda.set_per_process_memory_fraction(gpu_memory_fraction, self.device)
        self.bf16 = _switch(config.bf16, cuda and torch.cuda.is_bf16_supported())
        channels_last = _switch(config.channels_last, cuda)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

        c, h, _ = data.image_shape
        out_channels = config.data.channels or c
        input_size = config.data.resize or h
        torch.manual_seed(config.seed)
        self.model = create_model(
            config.model.name,
            num_classes=data.num_classes,
            in_channels=out_channels,
            input_size=input_size,
            **config.model.options,
        ).to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.num_params = count_parameters(self.model)
        self.flops = forward_flops(self.model, (1, out_channels, input_size, input_size), self.device)
        self.forward = torch.compile(self.model) if config.compile else self.model

        self.pipeline = BatchPipeline(config.data, data.mean, data.std, c, self.device, channels_last)
        self.train_x, self.train_y = _tensor(data.train_images, self.device), _tensor(data.train_labels, self.device)
        self.val_x, self.val_y = _tensor(data.val_images, self.device), _tensor(data.val_labels, self.device)
        steps = max(len(self.train_y) // config.batch_size + (len(self.train_y) % config.batch_size > 1), 1)
        self.optimizer = create_optimizer(self.model, config.optimizer)
        self.schedule = create_schedule(self.optimizer, config.schedule, config.epochs, steps)
        self.generator = torch.Generator(device="cpu")
        self.epoch = 0
        self.best_val_acc = 0.0

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, evaluate on the validation split, and return the result dict."""
        seed = _epoch_seed(self.config.seed, self.epoch)
        torch.manual_seed(seed)
        self.generator.manual_seed(seed)
        lr = self.optimizer.param_groups[0]["lr"]
        stats: EpochStats = train_epoch(
            self.forward,
            self.pipeline,
            self.train_x,
            self.train_y,
            self.optimizer,
            self.schedule,
            batch_size=self.config.batch_size,
            generator=self.generator,
            label_smoothing=self.config.label_smoothing,
            grad_clip_norm=self.config.grad_clip_norm,
            bf16=self.bf16,
        )
        val_loss, val_acc = evaluate(
            self.forward, self.pipeline, self.val_x, self.val_y, batch_size=self.config.eval_batch_size, bf16=self.bf16
        )
        if not math.isfinite(val_loss):
            val_loss = WORST_LOSS
        self.epoch += 1
        self.best_val_acc = max(self.best_val_acc, val_acc)
        return {
            "train/loss": stats.loss,
            "train/acc": stats.acc,
            "val/loss": val_loss,
            "val/acc": val_acc,
            "val/acc_best": self.best_val_acc,
            "lr": lr,
            "epoch": self.epoch,
            "time/epoch_s": stats.seconds,
            "throughput/img_s": stats.images_per_s,
            "model/params": self.num_params,
            "model/flops": self.flops,
            "status": "completed" if self.finished else "running",
        }

    def evaluate_images(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """Loss and accuracy on any uint8 images (the driver's one test measurement)."""
        x, y = _tensor(images, self.device), _tensor(labels, self.device)
        return evaluate(self.forward, self.pipeline, x, y, batch_size=self.config.eval_batch_size, bf16=self.bf16)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_name": self.config.model.name,
            "num_params": self.num_params,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": self.epoch,
            "best_val_acc": self.best_val_acc,
        }

    def save(self, directory: Path) -> Path:
        path = Path(directory) / CHECKPOINT_FILE
        torch.save(self.state_dict(), path)
        return path

    def load(self, directory: Path, weights_only: bool = False) -> None:
        """Restore from ``directory``; ``weights_only`` restores just the model (final evaluation)."""
        path = Path(directory) / CHECKPOINT_FILE
        state = read_checkpoint(path)
        if state.get("model_name") != self.config.model.name or state.get("num_params") != self.num_params:
            raise CheckpointError(
                f"{path}: written by model {state.get('model_name')!r} with {state.get('num_params')} parameters, "
                f"but this trial builds {self.config.model.name!r} with {self.num_params}; "
                "resume it with the config it was trained with"
            )
        try:
            self.model.load_state_dict(state["model"])
            if not weights_only:
                self.optimizer.load_state_dict(state["optimizer"])
                self.schedule.load_state_dict(state["schedule"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path}: does not fit this trial's model or optimizer ({err})") from None
        self.epoch = int(state["epoch"])
        self.best_val_acc = float(state["best_val_acc"])
        if not weights_only:
            self._apply_config_hyperparameters()

    def _apply_config_hyperparameters(self) -> None:
        """After a restore the config wins over the saved lr/momentum (PBT restores with new values)."""
        opt = self.config.optimizer
        self.schedule.base_lrs = [opt.lr for _ in self.optimizer.param_groups]
        factor = self.schedule.lr_lambdas[0](self.schedule.last_epoch)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = opt.lr
            group["lr"] = opt.lr * factor
            if "momentum" in group:
                group["momentum"] = opt.momentum


WORST_LOSS = 1e9  # the finite "worst" loss reported by diverged and out-of-memory trials


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise CheckpointError(f"{path}: checkpoint is corrupt or unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a tunelab trial checkpoint (expected format {CHECKPOINT_FORMAT})")
    return state


def forward_flops(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device) -> int:
    """FLOPs of one forward pass of a single image (torch's flop counter); 0 if it cannot count."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    try:
        model.eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(shape, device=device))
        return int(counter.get_total_flops())
    except Exception as err:  # counting is a nicety; never fail a trial over it
        log.debug("flop count failed: %s", err)
        return 0
    finally:
        model.train(was_training)


def _switch(setting: str, auto: bool) -> bool:
    return auto if setting == "auto" else setting == "on"
