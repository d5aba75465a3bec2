"""The training config: frozen dataclasses that describe one trial completely.

A preset's ``base`` section is parsed into ``TrainConfig``; a trial's flat dotted
config (``{"optimizer.lr": 0.01, "model.dropout": 0.3, ...}``) is parsed into the
same dataclasses by ``TrainConfig.from_flat``. Both go through ``parse_dataclass``,
so a value that would be rejected in YAML is rejected when sampled or overridden.

Model and schedule options are open-ended (each model takes its own keyword
arguments): they are checked against the registered factory's signature.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from trainables.errors import ConfigError


def _rule(**rule: Any) -> dict[str, Any]:
    return {"rule": rule}


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, applied batched on the trial's device."""

    crop_padding: int = field(default=0, metadata=_rule(ge=0, le=16))
    flip: bool = False
    rotation_deg: float = field(default=0.0, metadata=_rule(ge=0, le=180))
    color_jitter: float = field(default=0.0, metadata=_rule(ge=0, le=1))


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of the ``synthetic`` data set (random images; used only when ``data.name`` is synthetic)."""

    train_size: int = field(default=2048, metadata=_rule(ge=10, le=1_000_000))
    test_size: int = field(default=512, metadata=_rule(ge=10, le=1_000_000))
    channels: int = field(default=3, metadata=_rule(ge=1, le=16))
    image_size: int = field(default=32, metadata=_rule(ge=4, le=512))
    num_classes: int = field(default=10, metadata=_rule(ge=2, le=1000))
    seed: int = field(default=0, metadata=_rule(ge=0))


@dataclass(frozen=True)
class DataConfig:
    """Which data set, how it is split, and how batches are shaped and normalised."""

    name: str = "digits"
    val_fraction: float = field(default=0.1, metadata=_rule(gt=0, lt=1))
    split_seed: int = field(default=0, metadata=_rule(ge=0))
    train_limit: int | None = field(default=None, metadata=_rule(ge=10))
    test_limit: int | None = field(default=None, metadata=_rule(ge=10))
    normalize: Literal["dataset", "half", "unit", "imagenet"] = "dataset"
    resize: int | None = field(default=None, metadata=_rule(ge=8, le=512))
    channels: int | None = field(default=None, metadata=_rule(choices=(1, 3)))
    augment: AugmentConfig = AugmentConfig()
    synthetic: SyntheticConfig = SyntheticConfig()


@dataclass(frozen=True)
class ModelConfig:
    """A registered model name plus its keyword options (checked against its factory)."""

    name: str = "small_cnn"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = field(default=0.1, metadata=_rule(gt=0, le=10))
    momentum: float = field(default=0.9, metadata=_rule(ge=0, lt=1))
    nesterov: bool = False
    weight_decay: float = field(default=0.0, metadata=_rule(ge=0, le=1))
    beta1: float = field(default=0.9, metadata=_rule(ge=0, lt=1))
    beta2: float = field(default=0.999, metadata=_rule(ge=0, lt=1))


@dataclass(frozen=True)
class ScheduleConfig:
    """LR schedule, stepped once per batch; warm-up is linear from 0."""

    name: Literal["none", "step", "cosine", "cosine_restarts", "onecycle"] = "none"
    warmup_epochs: float = field(default=0.0, metadata=_rule(ge=0))
    step_epochs: int = field(default=30, metadata=_rule(ge=1))
    gamma: float = field(default=0.1, metadata=_rule(gt=0, le=1))
    restart_epochs: int = field(default=15, metadata=_rule(ge=1))
    min_lr_ratio: float = field(default=0.0, metadata=_rule(ge=0, lt=1))


@dataclass(frozen=True)
class TrainConfig:
    """Everything one trial needs; the ``base`` section of a preset."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    epochs: int = field(default=10, metadata=_rule(ge=1, le=10_000))
    batch_size: int = field(default=128, metadata=_rule(ge=1, le=65_536))
    eval_batch_size: int = field(default=1024, metadata=_rule(ge=1))
    label_smoothing: float = field(default=0.0, metadata=_rule(ge=0, lt=1))
    grad_clip_norm: float | None = field(default=None, metadata=_rule(gt=0))
    seed: int = field(default=0, metadata=_rule(ge=0))
    bf16: Literal["auto", "on", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = False
    deterministic: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "", prefix: str = "base") -> TrainConfig:
        config = parse_dataclass(cls, raw, source, prefix)
        check_registered_names(config, source, prefix)
        return config

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], source: str = "trial config") -> TrainConfig:
        """Parse a flat dotted config (a Ray trial's config) into a TrainConfig."""
        return cls.from_dict(unflatten(flat), source=source, prefix="")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def to_flat(self) -> dict[str, Any]:
        return flatten(self.to_dict())


# --------------------------------------------------------------------------- parsing


def parse_dataclass(cls: type, raw: Any, source: str, path: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys and bad values."""
    if isinstance(raw, cls):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(source, path, f"expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if cls is ModelConfig or cls is ScheduleConfig:
        return _parse_open(cls, raw, source, path, hints, fields)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(source, _join(path, unknown[0]), f"unknown key; valid keys: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _parse_value(hints[name], raw[name], source, _join(path, name), f.metadata.get("rule", {}))
    return cls(**values)


def _parse_open(cls, raw, source, path, hints, fields):
    """ModelConfig: ``name`` plus free options. ScheduleConfig: fixed keys (options checked by name)."""
    if cls is ScheduleConfig:
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise ConfigError(source, _join(path, unknown[0]), f"unknown key; valid keys: {', '.join(fields)}")
        values = {
            n: _parse_value(hints[n], raw[n], source, _join(path, n), fields[n].metadata.get("rule", {}))
            for n in fields
            if n in raw
        }
        return cls(**values)
    name = _parse_value(str, raw.get("name", ModelConfig.name), source, _join(path, "name"), {})
    options = {k: v for k, v in raw.items() if k not in ("name", "options")}
    if isinstance(raw.get("options"), Mapping):
        options.update(raw["options"])
    return ModelConfig(name=name, options=dict(sorted(options.items())))


def _parse_value(hint: Any, value: Any, source: str, path: str, rule: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse_value(inner, value, source, path, rule)
    if origin is Literal:
        if value not in args:
            raise ConfigError(source, path, f"expected one of {', '.join(map(str, args))}; got {_show(value)}")
        return value
    if dataclasses.is_dataclass(hint):
        return parse_dataclass(hint, value, source, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"expected an integer{_describe(rule)}, got {_show(value)}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, path, f"expected a number{_describe(rule)}, got {_show(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(source, path, f"expected a finite number{_describe(rule)}, got {_show(value)}")
    elif hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(source, path, f"expected a non-empty string, got {_show(value)}")
        return value
    _check_rule(value, rule, source, path, "an integer" if hint is int else "a number")
    return value


def _check_rule(value: Any, rule: Mapping[str, Any], source: str, path: str, kind: str) -> None:
    bad = (
        ("gt" in rule and not value > rule["gt"])
        or ("ge" in rule and not value >= rule["ge"])
        or ("lt" in rule and not value < rule["lt"])
        or ("le" in rule and not value <= rule["le"])
        or ("choices" in rule and value not in rule["choices"])
    )
    if bad:
        raise ConfigError(source, path, f"expected {kind}{_describe(rule)}, got {_show(value)}")


def _describe(rule: Mapping[str, Any]) -> str:
    words = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = [f"{words[k]} {rule[k]:g}" for k in ("gt", "ge", "lt", "le") if k in rule]
    if "choices" in rule:
        parts.append("one of " + ", ".join(map(str, rule["choices"])))
    return (" " + " and ".join(parts)) if parts else ""


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------- registry-backed checks


def check_registered_names(config: TrainConfig, source: str, prefix: str) -> None:
    """Check the data set and model names and the model's options against its factory."""
    from trainables.data import DATASETS
    from trainables.models import MODELS

    if config.data.name not in DATASETS:
        raise ConfigError(source, _join(prefix, "data.name"), DATASETS.unknown_message(config.data.name))
    if config.model.name not in MODELS:
        raise ConfigError(source, _join(prefix, "model.name"), MODELS.unknown_message(config.model.name))
    check_options(MODELS.get(config.model.name), config.model.options, source, _join(prefix, "model"))


# Filled in by the trainable from the data set, never by the user.
DERIVED_MODEL_OPTIONS = ("num_classes", "in_channels", "input_size")


def check_options(factory: Any, options: Mapping[str, Any], source: str, path: str) -> None:
    """Options must be keyword parameters of ``factory`` with values of the annotated type."""
    signature = inspect.signature(factory)
    hints = typing.get_type_hints(factory)
    allowed = [n for n in signature.parameters if n not in DERIVED_MODEL_OPTIONS]
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(source, _join(path, key), f"not an option of this model; options: {', '.join(allowed)}")
        hint = hints.get(key)
        simple = hint in (int, float, bool, str)
        if simple or typing.get_origin(hint) in (typing.Union, types.UnionType, Literal):
            _parse_value(hint, value, source, _join(path, key), {})


# ----------------------------------------------------------------------- flat dicts


def to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(obj, ModelConfig) and f.name == "options":
                out.update({k: to_plain(v) for k, v in value.items()})
            else:
                out[f.name] = to_plain(value)
        return out
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [to_plain(v) for v in obj]
    return obj


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        path = _join(prefix, key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested
