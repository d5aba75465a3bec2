"""Optimizers and LR schedules, each registered by name.

Schedules are per-step multipliers of the base learning rate (a ``LambdaLR``),
so their state is just the step count and a resumed trial continues exactly.
Linear warm-up from 0 over ``warmup_epochs`` composes with every schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from trainables.config import OptimizerConfig, ScheduleConfig
from trainables.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("LR schedule")


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation parameters (1-d tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable, config: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0
    )


@OPTIMIZERS.register("adam")
def adam(params: Iterable, config: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2))


@OPTIMIZERS.register("adamw")
def adamw(params: Iterable, config: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.lr, betas=(config.beta1, config.beta2))


def create_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(config.name)(_param_groups(model, config.weight_decay), config)


Multiplier = Callable[[float], float]  # epoch progress (fractional epochs) → LR factor


@SCHEDULES.register("none")
def constant(config: ScheduleConfig, total_epochs: int) -> Multiplier:
    return lambda epoch: 1.0


@SCHEDULES.register("step")
def step(config: ScheduleConfig, total_epochs: int) -> Multiplier:
    return lambda epoch: config.gamma ** int(epoch // config.step_epochs)


@SCHEDULES.register("cosine")
def cosine(config: ScheduleConfig, total_epochs: int) -> Multiplier:
    floor = config.min_lr_ratio
    span = max(total_epochs - config.warmup_epochs, 1e-9)

    def factor(epoch: float) -> float:
        # Flat at 1 during warm-up, then one half-cosine down to the floor at the last epoch.
        t = min(max(epoch - config.warmup_epochs, 0.0) / span, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


@SCHEDULES.register("cosine_restarts")
def cosine_restarts(config: ScheduleConfig, total_epochs: int) -> Multiplier:
    floor, period = config.min_lr_ratio, config.restart_epochs
    return lambda epoch: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * ((epoch % period) / period)))


@SCHEDULES.register("onecycle")
def onecycle(config: ScheduleConfig, total_epochs: int) -> Multiplier:
    """Rise from lr/25 to lr over the first 30%, then cosine down to lr/1e4 (PyTorch's OneCycleLR shape)."""
    peak = 0.3 * total_epochs

    def factor(epoch: float) -> float:
        if epoch < peak:
            return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * epoch / peak))
        t = min((epoch - peak) / max(total_epochs - peak, 1e-9), 1.0)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def create_schedule(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR: warm-up (if any) times the named schedule."""
    shape = SCHEDULES.get(config.name)(config, total_epochs)
    warmup = config.warmup_epochs

    def multiplier(step_count: int) -> float:
        epoch = step_count / steps_per_epoch
        ramp = min(1.0, (epoch + 1 / steps_per_epoch) / warmup) if warmup > 0 else 1.0
        return ramp * shape(epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
