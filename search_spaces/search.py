"""Searchers and schedulers named in a preset's ``tune`` section, built for Ray Tune."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
)
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

from search_spaces.domains import param_space
from search_spaces.optuna_searcher import HonestOptunaSearch
from search_spaces.schema import PBT_MUTABLE, REPORTED_METRICS, Preset

# The result key that counts epochs for every scheduler (ASHA rungs, PBT intervals).
TIME_ATTR = "epoch"


def worst_value(metric: str) -> float:
    return 0.0 if REPORTED_METRICS[metric] == "max" else 1e9


def build_searcher(preset: Preset, journal: Path) -> Searcher | BasicVariantGenerator:
    tune = preset.tune
    if tune.searcher == "optuna":
        searcher = HonestOptunaSearch(
            param_space(preset),
            metric=tune.metric,
            mode=tune.mode,
            journal=journal,
            max_epochs=preset.base.epochs,
            seed=tune.seed,
            worst_value=worst_value(tune.metric),
        )
        return ConcurrencyLimiter(searcher, max_concurrent=tune.max_concurrent_trials)
    # random and grid: Ray's variant generator samples domains and expands grid entries.
    return BasicVariantGenerator(max_concurrent=tune.max_concurrent_trials, random_state=tune.seed)


def build_scheduler(preset: Preset) -> Any:
    tune, sched = preset.tune, preset.tune.scheduler
    max_t = preset.base.epochs
    common = {"time_attr": TIME_ATTR, "metric": tune.metric, "mode": tune.mode}
    if sched.name == "asha":
        return ASHAScheduler(
            max_t=max_t,
            grace_period=min(sched.grace_period_epochs, max_t),
            reduction_factor=sched.reduction_factor,
            brackets=sched.brackets,
            **common,
        )
    if sched.name == "hyperband":
        return HyperBandScheduler(max_t=max_t, reduction_factor=sched.reduction_factor, **common)
    if sched.name == "median":
        return MedianStoppingRule(grace_period=sched.grace_period_epochs, min_samples_required=3, **common)
    if sched.name == "pbt":
        mutations = {path: _pbt_mutation(dist) for path, dist in preset.space.items() if path in PBT_MUTABLE}
        return PopulationBasedTraining(
            perturbation_interval=sched.perturbation_interval_epochs,
            hyperparam_mutations=mutations,  # Ray's PBT draws from Python's global `random`; it takes no seed
            **common,
        )
    return FIFOScheduler()


def checkpoints_to_keep(preset: Preset) -> int | None:
    """How many checkpoints Ray keeps per trial: the best one, or all of them under PBT.

    A PBT trial that exploits another restores the other's latest checkpoint, which a
    keep-one policy may already have deleted (Ray then fails the exploiting trial).
    """
    return None if preset.tune.scheduler.name == "pbt" else 1


def _pbt_mutation(dist: Any) -> Any:
    from search_spaces.domains import to_ray_domain

    return to_ray_domain(dist)
