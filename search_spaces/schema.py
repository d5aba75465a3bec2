"""Presets: YAML → frozen dataclasses, validated once, with errors that name file and dotted path.

A preset has ``base`` (a complete ``TrainConfig``), ``space`` (dotted path into
base → distribution), ``tune`` (how to search), and optional ``logging`` and
``reference`` (a study's reported numbers). See ``search_spaces/quickstart.yaml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from search_spaces.errors import ConfigError
from trainables.config import TrainConfig, _rule, flatten, parse_dataclass, unflatten

# Every metric the trainable reports each epoch; a preset may only optimise one of these.
REPORTED_METRICS = {
    "train/loss": "min",
    "train/acc": "max",
    "val/loss": "min",
    "val/acc": "max",
    "val/acc_best": "max",
}

# Data fields fixed for a whole search: the driver loads and splits the data once.
LOADED_ONCE = ("data.name", "data.val_fraction", "data.split_seed", "data.train_limit", "data.test_limit")

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint", "grid")


@dataclass(frozen=True)
class Distribution:
    """One searched parameter: ``kind`` is one of ``DISTRIBUTIONS``; ``values`` its bounds or choices."""

    kind: str
    values: tuple

    def corners(self) -> list[Any]:
        """The values to validate before any trial runs: bounds, or every choice."""
        if self.kind in ("choice", "grid"):
            return list(self.values)
        if self.kind == "randint":
            return [self.values[0], self.values[1] - 1]
        return list(self.values)


@dataclass(frozen=True)
class SchedulerConfig:
    name: Literal["asha", "hyperband", "median", "pbt", "fifo"] = "asha"
    grace_period_epochs: int = field(default=1, metadata=_rule(ge=1))
    reduction_factor: float = field(default=3.0, metadata=_rule(gt=1))
    brackets: int = field(default=1, metadata=_rule(ge=1))
    perturbation_interval_epochs: int = field(default=2, metadata=_rule(ge=1))


@dataclass(frozen=True)
class ResourcesConfig:
    cpus: float = field(default=1.0, metadata=_rule(gt=0))
    gpus: float = field(default=0.0, metadata=_rule(ge=0))


@dataclass(frozen=True)
class TuneSection:
    metric: str = "val/acc"
    mode: Literal["max", "min"] = "max"
    searcher: Literal["optuna", "random", "grid"] = "optuna"
    scheduler: SchedulerConfig = SchedulerConfig()
    num_samples: int = field(default=16, metadata=_rule(ge=1))
    max_concurrent_trials: int = field(default=2, metadata=_rule(ge=1))
    resources: ResourcesConfig = ResourcesConfig()
    max_failures: int = field(default=2, metadata=_rule(ge=0))
    top_k_test: int = field(default=3, metadata=_rule(ge=0))
    seed: int = field(default=0, metadata=_rule(ge=0))


@dataclass(frozen=True)
class WandbConfig:
    project: str | None = None
    entity: str | None = None
    tags: tuple = ()
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"


@dataclass(frozen=True)
class LoggingConfig:
    wandb: WandbConfig = WandbConfig()


@dataclass(frozen=True)
class Preset:
    name: str
    source: str
    description: str
    budget: str
    base: TrainConfig
    space: Mapping[str, Distribution]
    tune: TuneSection
    logging: LoggingConfig = LoggingConfig()
    reference: Mapping[str, Any] | None = None
    text: str = ""

    def replace(self, **changes: Any) -> Preset:
        return dataclasses.replace(self, **changes)


_TOP_KEYS = ("description", "budget", "base", "space", "tune", "logging", "reference")


def parse_preset(raw: Any, name: str, source: str, text: str = "") -> Preset:
    """Validate a parsed YAML document as a preset."""
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "", f"expected a mapping with sections {', '.join(_TOP_KEYS)}")
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(source, unknown[0], f"unknown section; valid sections: {', '.join(_TOP_KEYS)}")
    for key in ("description", "budget"):
        if not isinstance(raw.get(key, ""), str):
            raise ConfigError(source, key, f"expected a one-line string, got {raw[key]!r}")
    base = TrainConfig.from_dict(raw.get("base") or {}, source, "base")
    tune = _parse_tune(raw.get("tune"), source)
    space = _parse_space(raw.get("space") or {}, base, tune, source)
    logging_cfg = _parse_logging(raw.get("logging"), source)
    reference = raw.get("reference")
    if reference is not None and not isinstance(reference, Mapping):
        raise ConfigError(source, "reference", "expected a mapping (study, reported numbers, recipe)")
    return Preset(
        name=name,
        source=source,
        description=str(raw.get("description", "")).strip(),
        budget=str(raw.get("budget", "")).strip(),
        base=base,
        space=space,
        tune=tune,
        logging=logging_cfg,
        reference=dict(reference) if reference else None,
        text=text,
    )


def _parse_tune(raw: Any, source: str) -> TuneSection:
    raw = dict(raw or {})
    if isinstance(raw.get("scheduler"), str):  # `scheduler: fifo` is shorthand for `{name: fifo}`
        raw["scheduler"] = {"name": raw["scheduler"]}
    tune = parse_dataclass(TuneSection, raw, source, "tune")
    if tune.metric not in REPORTED_METRICS:
        raise ConfigError(
            source, "tune.metric", f"{tune.metric!r} is never reported; choose one of {', '.join(REPORTED_METRICS)}"
        )
    if tune.mode != REPORTED_METRICS[tune.metric]:
        raise ConfigError(
            source,
            "tune.mode",
            f"{tune.metric} is better when {'higher' if REPORTED_METRICS[tune.metric] == 'max' else 'lower'}; "
            f"expected mode: {REPORTED_METRICS[tune.metric]}, got {tune.mode}",
        )
    if tune.scheduler.name == "pbt" and tune.searcher != "random":
        raise ConfigError(
            source, "tune.searcher", "PBT mutates configs itself: use searcher: random with scheduler pbt"
        )
    return tune


def _parse_logging(raw: Any, source: str) -> LoggingConfig:
    raw = dict(raw or {})
    wandb = dict(raw.get("wandb") or {})
    if "tags" in wandb:
        if not isinstance(wandb["tags"], list) or not all(isinstance(t, str) for t in wandb["tags"]):
            raise ConfigError(source, "logging.wandb.tags", "expected a list of strings")
        wandb["tags"] = tuple(wandb["tags"])
    raw["wandb"] = wandb
    return parse_dataclass(LoggingConfig, raw, source, "logging")


def _parse_space(raw: Any, base: TrainConfig, tune: TuneSection, source: str) -> dict[str, Distribution]:
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "space", "expected a mapping of dotted paths to distributions")
    flat_base = base.to_flat()
    space: dict[str, Distribution] = {}
    for path, spec in raw.items():
        where = f"space.{path}"
        dist = _parse_distribution(spec, source, where)
        if path in LOADED_ONCE:
            raise ConfigError(
                source, where, "the data set and its split are loaded once by the driver and cannot be searched"
            )
        if path not in flat_base and not _is_model_option(path, base):
            raise ConfigError(
                source, where, f"not a field of base; fields include: {', '.join(sorted(flat_base)[:12])}, …"
            )
        space[path] = dist
    _check_model_switch(space, base, source)
    for path, dist in space.items():
        for value in dist.corners():  # every sampled config passes the same validation, before any training
            try:
                TrainConfig.from_flat({**flat_base, path: value}, source)
            except ConfigError as err:
                raise ConfigError(source, f"space.{path}", f"value {value!r} is invalid: {_inner(err)}") from None
    kinds = {d.kind for d in space.values()}
    if tune.searcher == "grid" and kinds - {"grid", "choice"}:
        raise ConfigError(source, "tune.searcher", "the grid searcher needs every space entry to be grid or choice")
    if tune.searcher == "optuna" and "grid" in kinds:
        raise ConfigError(
            source, "tune.searcher", "optuna cannot mix grid entries with sampling; use searcher: grid or random"
        )
    if tune.searcher == "optuna" and not space:
        raise ConfigError(source, "space", "optuna needs at least one searched parameter (or use searcher: random)")
    if tune.scheduler.name == "pbt" and not set(space) & set(PBT_MUTABLE):
        raise ConfigError(
            source, "space", f"PBT perturbs {' and '.join(PBT_MUTABLE)} during training: search at least one of them"
        )
    return space


# The hyperparameters PBT perturbs; a restored trial re-applies them from its new config.
PBT_MUTABLE = ("optimizer.lr", "optimizer.momentum")


def _inner(err: ConfigError) -> str:
    return f"{err.path}: {err.detail}" if err.path else err.detail


def _check_model_switch(space: Mapping[str, Distribution], base: TrainConfig, source: str) -> None:
    """A searched ``model.name`` must accept the base's model options and every searched ``model.*`` value.

    Each value of a searched field is checked against the base above; this checks the
    pairs that switch architecture, where one model's option is meaningless to another.
    """
    from trainables.config import check_options
    from trainables.models import MODELS

    if "model.name" not in space:
        return
    searched = {
        p.split(".", 1)[1]: d.corners() for p, d in space.items() if p.startswith("model.") and p != "model.name"
    }
    for name in space["model.name"].corners():
        if name not in MODELS:
            continue  # reported with the closest names by the per-value check
        factory = MODELS.get(name)
        for option, values in [(k, [v]) for k, v in base.model.options.items() if k not in searched] + list(
            searched.items()
        ):
            origin = "space" if option in searched else "base"
            for value in values:
                try:
                    check_options(factory, {option: value}, source, "model")
                except ConfigError as err:
                    raise ConfigError(
                        source,
                        "space.model.name",
                        f"model {name!r} cannot take {origin} option model.{option}={value!r} ({err.detail}); "
                        "keep only options every searched model accepts, or search the models in separate presets",
                    ) from None


def _is_model_option(path: str, base: TrainConfig) -> bool:
    """``model.<option>`` may be searched even when the preset leaves it at the factory default."""
    import inspect

    from trainables.config import DERIVED_MODEL_OPTIONS
    from trainables.models import MODELS

    if not path.startswith("model.") or path.count(".") != 1:
        return False
    option = path.split(".", 1)[1]
    params = inspect.signature(MODELS.get(base.model.name)).parameters
    return option in params and option not in DERIVED_MODEL_OPTIONS


def _parse_distribution(spec: Any, source: str, where: str) -> Distribution:
    valid = "one of {loguniform: [low, high]}, {uniform: [low, high]}, {randint: [low, high]}, {choice: [...]}, {grid: [...]}"
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(source, where, f"expected {valid}, got {spec!r}")
    ((kind, values),) = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(source, where, f"unknown distribution {kind!r}; expected {valid}")
    if not isinstance(values, list) or not values:
        raise ConfigError(source, where, f"{kind} needs a non-empty list, got {values!r}")
    if kind in ("choice", "grid"):
        if any(isinstance(v, (list, dict)) for v in values):
            raise ConfigError(source, where, f"{kind} values must be numbers, strings or booleans, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(source, where, f"{kind} has duplicate values: {values!r}")
        return Distribution(kind, tuple(values))
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(source, where, f"{kind} needs [low, high] numbers, got {values!r}")
    low, high = values
    if low >= high:
        raise ConfigError(source, where, f"{kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(source, where, f"loguniform needs 0 < low < high, got [{low}, {high}]")
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise ConfigError(source, where, f"randint needs integer bounds [low, high), got {values!r}")
    return Distribution(kind, (low, high))


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``--set dotted.key=value`` to a raw preset; base keys may omit ``base.``.

    Pinning a base value that the space searches removes it from the space;
    ``space.<path>=<distribution>`` replaces (or adds) one space entry.
    """
    import yaml

    raw = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError("--set", item, "expected dotted.key=value, e.g. --set optimizer.lr=0.01")
        key, text = item.split("=", 1)
        key = key.strip()
        value = _parse_scalar(text, yaml)
        section, _, rest = key.partition(".")
        if section == "space" and rest:  # --set 'space.optimizer.lr={loguniform: [1e-4, 1e-2]}' replaces one entry
            raw["space"] = {**(raw.get("space") or {}), rest: value}
            continue
        if section not in ("base", "tune", "logging") or not rest:
            section, rest = "base", key
        flat = flatten(raw.get(section) or {})
        if section == "tune" and isinstance(flat.get("scheduler"), str):
            flat.pop("scheduler")
            flat["scheduler.name"] = raw["tune"]["scheduler"]
        flat[rest] = value
        if section == "base" and rest == "model.name":
            flat = _keep_options_of(value, flat, raw)
        raw[section] = unflatten(flat)
        if section == "base" and rest in (raw.get("space") or {}):
            raw["space"] = {k: v for k, v in raw["space"].items() if k != rest}
    return raw


def _keep_options_of(model_name: Any, flat_base: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """Switching the model with --set drops the old model's options (base and space) that the new one lacks.

    Options belong to a model: ``--set model.name=mlp`` on a CNN preset means "an MLP with its
    defaults", not "an MLP with a CNN's dense_width". Unknown names are left for validation to report.
    """
    import inspect
    import logging

    from trainables.models import MODELS

    if not isinstance(model_name, str) or model_name not in MODELS:
        return flat_base
    accepted = set(inspect.signature(MODELS.get(model_name)).parameters)
    foreign = [k for k in flat_base if k.startswith("model.") and k != "model.name" and k[6:] not in accepted]
    searched = [
        k for k in (raw.get("space") or {}) if k.startswith("model.") and k != "model.name" and k[6:] not in accepted
    ]
    if foreign or searched:
        logging.getLogger(__name__).warning(
            "model %s has no option(s) %s; dropped from the preset",
            model_name,
            ", ".join(sorted({*foreign, *searched})),
        )
        raw["space"] = {k: v for k, v in (raw.get("space") or {}).items() if k not in searched}
    return {k: v for k, v in flat_base.items() if k not in foreign}


def _parse_scalar(text: str, yaml: Any) -> Any:
    from search_spaces.yaml_text import load_yaml

    try:
        return load_yaml(text)  # reads 1e-3 as a number, and {loguniform: [1e-4, 1e-2]} as a mapping
    except yaml.YAMLError:
        return text
