"""The pure training loop: ``train_epoch`` and ``evaluate``, plain PyTorch, no Ray.

    from trainables.loop import train_epoch, evaluate
    stats = train_epoch(model, pipeline, images, labels, optimizer, schedule, batch_size=128, generator=g)

Losses and correct counts accumulate on the device and are read once per epoch
(plus one finiteness check every ``check_every`` steps), so the loop does not
stall the GPU with a host sync per batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from trainables.pipeline import BatchPipeline, batch_indices


class DivergedError(FloatingPointError):
    """The training loss became NaN or infinite, or exploded past ``DIVERGED_LOSS``."""


# A mean cross-entropy this large means logits are off by thousands: the weights have blown up, and
# such a run rarely turns NaN promptly (dead ReLUs can freeze it at a huge finite loss), so it is
# stopped as diverged rather than trained on. Chance level is ln(classes) < 7 for 1,000 classes.
DIVERGED_LOSS = 1e4


@dataclass(frozen=True)
class EpochStats:
    loss: float
    acc: float
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def autocast_context(device: torch.device, bf16: bool):
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_epoch(
    model: nn.Module,
    pipeline: BatchPipeline,
    images: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    batch_size: int,
    generator: torch.Generator | None = None,
    label_smoothing: float = 0.0,
    grad_clip_norm: float | None = None,
    bf16: bool = False,
    check_every: int = 25,
) -> EpochStats:
    """One pass over ``images`` in a random order; raises ``DivergedError`` on a non-finite or exploded loss."""
    model.train()
    device = pipeline.device
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for step, idx in enumerate(batch_indices(len(labels), batch_size, generator, images.device, shuffle=True)):
        inputs = pipeline(images[idx], train=True, generator=generator)
        targets = labels[idx].to(device, non_blocking=True)
        with autocast_context(device, bf16):
            logits = model(inputs)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == targets).sum()
        seen += len(idx)
        if (step + 1) % check_every == 0:
            _check_loss(loss_sum.item() / seen, f"after {step + 1} steps")
    total = loss_sum.item()
    _check_loss(total / max(seen, 1), "at the end of the epoch")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return EpochStats(total / max(seen, 1), correct.item() / max(seen, 1), seen, time.perf_counter() - start)


def _check_loss(mean_loss: float, when: str) -> None:
    if not math.isfinite(mean_loss):
        raise DivergedError(f"training loss is not finite {when}")
    if mean_loss > DIVERGED_LOSS:
        raise DivergedError(f"training loss exploded to {mean_loss:.3g} {when} (limit {DIVERGED_LOSS:g})")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    pipeline: BatchPipeline,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 1024,
    bf16: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``images`` (no augmentation)."""
    model.eval()
    device = pipeline.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for idx in batch_indices(len(labels), batch_size, None, images.device, shuffle=False):
        inputs = pipeline(images[idx], train=False)
        targets = labels[idx].to(device, non_blocking=True)
        with autocast_context(device, bf16):
            logits = model(inputs).float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum")
        correct += (logits.argmax(1) == targets).sum()
    n = max(len(labels), 1)
    return loss_sum.item() / n, correct.item() / n
