"""The single translation from the preset vocabulary to Ray Tune domains.

``param_space(preset)`` is what the Tuner receives: the whole base config as
flat dotted constants plus one Ray domain per searched path, so every trial's
config is its complete resolved training config (which is also what lands in
``trials.parquet`` and in each W&B run's config).
"""

from __future__ import annotations

from typing import Any

from ray import tune

from search_spaces.schema import Distribution, Preset


def to_ray_domain(dist: Distribution) -> Any:
    """``loguniform``/``uniform``/``randint``/``choice``/``grid`` → the Ray Tune domain."""
    low_high = dist.values
    if dist.kind == "loguniform":
        return tune.loguniform(*low_high)
    if dist.kind == "uniform":
        return tune.uniform(*low_high)
    if dist.kind == "randint":
        return tune.randint(*low_high)
    if dist.kind == "choice":
        return tune.choice(list(dist.values))
    if dist.kind == "grid":
        return tune.grid_search(list(dist.values))
    raise ValueError(f"unknown distribution kind {dist.kind!r}")


def param_space(preset: Preset) -> dict[str, Any]:
    space = {key: _ray_constant(value) for key, value in preset.base.to_flat().items()}
    for path, dist in preset.space.items():
        space[path] = to_ray_domain(dist)
    return space


def _ray_constant(value: Any) -> Any:
    # Ray resolves lists in param_space element-wise; tuples are not domains either, but
    # a list of plain values round-trips through Ray and Parquet unchanged.
    return list(value) if isinstance(value, tuple) else value
