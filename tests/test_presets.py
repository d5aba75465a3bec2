"""Presets: every shipped preset validates; malformed ones fail naming file, dotted path and what is valid.

.venv/bin/python -m pytest tests/test_presets.py -q
"""

from __future__ import annotations

import copy
import random

import pytest
import yaml

import tune
from search_spaces import ConfigError, load_preset
from search_spaces.domains import param_space, to_ray_domain
from search_spaces.loader import PRESET_DIR, preset_names
from trainables.config import TrainConfig

STUDY_PRESETS = {
    "mnist_resnet50": "S0",
    "mnist_resnet18": "S2",
    "cifar_resnet18": "S1",
    "cifar_resnet50": "S1",
    "cifar_resnet_s3": "S3",
    "cifar_mlp": "S4",
    "cifar_cnn": "S4",
    "cifar_resnet50_dense": "S4",
    "ablation_mnist_resnet50": "S0",
    "ablation_mnist_resnet50_stem": "S0",
}
REQUIRED = {*STUDY_PRESETS, "quickstart", "fashion_mnist_resnet18"}


def test_required_presets_exist():
    assert REQUIRED <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_preset_is_documented_and_valid(name):
    preset = load_preset(name)
    text = (PRESET_DIR / f"{name}.yaml").read_text()
    header = text.split("\ndescription:")[0]
    assert header.startswith(f"# {name}"), "a preset opens with a comment naming it"
    assert f"python tune.py --space {name}" in header
    assert "Budget" in header and preset.budget and preset.description
    assert "\n" not in preset.description
    assert preset.space, "every preset searches something"
    if name in STUDY_PRESETS:
        assert preset.reference and preset.reference["study"] == STUDY_PRESETS[name]
        assert preset.reference["reported"] and preset.reference["recipe"]


@pytest.mark.parametrize("name", preset_names())
def test_sampled_configs_are_valid_training_configs(name):
    """What a searcher can propose parses as a TrainConfig (the trainable's first step)."""
    preset = load_preset(name)
    flat = {k: v for k, v in param_space(preset).items() if k not in preset.space}
    rng = random.Random(0)
    for _ in range(20):
        sample = {}
        for path, dist in preset.space.items():
            if dist.kind == "grid":
                sample[path] = rng.choice(dist.values)
            else:
                sample[path] = to_ray_domain(dist).sample()
        config = TrainConfig.from_flat({**flat, **sample})
        assert config.to_flat()["epochs"] == preset.base.epochs


def test_s0_recipe_is_faithful():
    base = load_preset("mnist_resnet50").base
    assert (base.model.name, base.model.options["weights"], base.model.options["pool"]) == (
        "imagenet_resnet50",
        "IMAGENET1K_V2",
        "max",
    )
    assert (base.data.name, base.data.resize, base.data.channels, base.data.normalize) == ("mnist", 32, 3, "unit")
    assert (base.optimizer.name, base.optimizer.lr, base.batch_size, base.epochs) == ("adam", 1e-3, 16, 2)


def test_s1_presets_share_hyperparameters():
    r18, r50 = load_preset("cifar_resnet18"), load_preset("cifar_resnet50")
    flat18 = {k: v for k, v in r18.base.to_flat().items() if k != "model.name"}
    flat50 = {k: v for k, v in r50.base.to_flat().items() if k != "model.name"}
    assert flat18 == flat50
    assert r18.base.data.normalize == "half" and r18.base.epochs == 100
    assert r18.base.data.augment.crop_padding == 4 and r18.base.data.augment.flip


def test_s4_dense_preset_has_keras_tuner_space():
    preset = load_preset("cifar_resnet50_dense")
    space = {path: (d.kind, d.values) for path, d in preset.space.items()}
    assert space == {
        "optimizer.lr": ("loguniform", (1e-5, 1e-3)),
        "model.dense1": ("randint", (128, 1025)),
        "model.dense2": ("randint", (64, 513)),
        "model.dropout": ("uniform", (0.3, 0.7)),
    }
    options = preset.base.model.options
    assert (options["head"], options["pool"], options["input_resize"]) == ("dense", "flatten", 256)


def test_ablation_grids_cover_the_s0_factors():
    weights = load_preset("ablation_mnist_resnet50")
    stem = load_preset("ablation_mnist_resnet50_stem")
    for preset in (weights, stem):
        assert preset.tune.searcher == "grid" and preset.tune.scheduler.name == "fifo"
        assert all(d.kind == "grid" for d in preset.space.values())
    assert set(weights.space["model.weights"].values) == {"none", "IMAGENET1K_V2"}
    assert set(stem.space["model.name"].values) == {"imagenet_resnet50", "cifar_resnet50"}
    factors = set(weights.space) | set(stem.space)
    assert {"data.resize", "data.normalize", "optimizer.lr", "batch_size"} <= factors


def test_list_shows_every_preset(capsys):
    assert tune.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = {line.split()[0]: line for line in lines if line.strip()}
    assert set(shown) == set(preset_names())
    for name in preset_names():
        preset = load_preset(name)
        assert preset.description in shown[name] and preset.budget in shown[name]


# ----------------------------------------------------------------------- malformed presets

VALID = {
    "description": "test preset",
    "budget": "2 trials",
    "base": {
        "data": {"name": "digits"},
        "model": {"name": "small_cnn", "width": 8},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "schedule": {"name": "cosine"},
        "epochs": 2,
        "batch_size": 32,
    },
    "space": {"optimizer.lr": {"loguniform": [0.001, 0.1]}},
    "tune": {"metric": "val/acc", "mode": "max", "searcher": "optuna", "scheduler": {"name": "asha"}},
}


def _mutated(edit):
    raw = copy.deepcopy(VALID)
    edit(raw)
    return raw


def _set(path, value):
    def edit(raw):
        node = raw
        *parents, leaf = path
        for key in parents:
            node = node[key]
        node[leaf] = value

    return edit


def _space(entries, **tune):
    def edit(raw):
        raw["space"] = entries
        raw["tune"].update(tune)

    return edit


MALFORMED = {
    "unknown_section": (_set(("tunes",), {}), "tunes", "valid sections"),
    "unknown_key": (_set(("base", "optimizer", "learning_rate"), 0.1), "base.optimizer.learning_rate", "valid keys"),
    "wrong_type": (_set(("base", "epochs"), "ten"), "base.epochs", "expected an integer"),
    "out_of_range": (_set(("base", "optimizer", "momentum"), 1.5), "base.optimizer.momentum", "< 1"),
    "unknown_model": (_set(("base", "model"), {"name": "resnet19"}), "base.model.name", "closest"),
    "unknown_model_option": (_set(("base", "model", "widht"), 8), "base.model.widht", "options: width"),
    "unknown_dataset": (_set(("base", "data", "name"), "cifar11"), "base.data.name", "cifar10"),
    "unknown_optimizer": (_set(("base", "optimizer", "name"), "rmsprop"), "base.optimizer.name", "sgd, adam, adamw"),
    "unknown_schedule": (_set(("base", "schedule", "name"), "linear"), "base.schedule.name", "cosine"),
    "low_not_below_high": (_space({"optimizer.lr": {"loguniform": [0.1, 0.01]}}), "space.optimizer.lr", "low < high"),
    "log_range_not_positive": (_space({"optimizer.lr": {"loguniform": [0, 0.1]}}), "space.optimizer.lr", "0 < low"),
    "empty_choice": (_space({"batch_size": {"choice": []}}), "space.batch_size", "non-empty list"),
    "unknown_distribution": (_space({"optimizer.lr": {"normal": [0, 1]}}), "space.optimizer.lr", "loguniform"),
    "randint_float_bounds": (_space({"batch_size": {"randint": [8.5, 64]}}), "space.batch_size", "integer bounds"),
    "not_a_base_field": (_space({"optimizer.lrr": {"uniform": [0.1, 0.2]}}), "space.optimizer.lrr", "not a field"),
    "searched_value_invalid": (
        _space({"optimizer.momentum": {"uniform": [0.5, 1.5]}}),
        "space.optimizer.momentum",
        "value 1.5 is invalid",
    ),
    "searched_model_invalid": (
        _space({"model.name": {"choice": ["small_cnn", "resnet19"]}}),
        "space.model.name",
        "closest",
    ),
    "data_set_searched": (_space({"data.name": {"choice": ["digits", "mnist"]}}), "space.data.name", "loaded once"),
    "grid_with_optuna": (_space({"batch_size": {"grid": [16, 32]}}), "tune.searcher", "cannot mix grid"),
    "grid_searcher_sampling": (
        _space({"optimizer.lr": {"loguniform": [0.001, 0.1]}}, searcher="grid"),
        "tune.searcher",
        "grid or choice",
    ),
    "metric_never_reported": (_set(("tune", "metric"), "test/acc"), "tune.metric", "val/acc"),
    "mode_against_metric": (_set(("tune", "mode"), "min"), "tune.mode", "expected mode: max"),
    "unknown_scheduler": (_set(("tune", "scheduler"), {"name": "bohb"}), "tune.scheduler.name", "asha"),
    "pbt_without_lr": (
        _space({"batch_size": {"choice": [16, 32]}}, searcher="random", scheduler={"name": "pbt"}),
        "space",
        "optimizer.lr",
    ),
    "negative_gpus": (_set(("tune", "resources"), {"cpus": 1, "gpus": -1}), "tune.resources.gpus", ">= 0"),
    "model_switch_keeps_options": (
        _space({"model.name": {"grid": ["small_cnn", "cifar_resnet18"]}}, searcher="grid"),
        "space.model.name",
        "model 'cifar_resnet18' cannot take base option model.width=8",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_preset_names_file_and_path(case, tmp_path):
    edit, path, hint = MALFORMED[case]
    file = tmp_path / f"{case}.yaml"
    file.write_text(yaml.safe_dump(_mutated(edit)))
    with pytest.raises(ConfigError) as info:
        load_preset(str(file))
    message = str(info.value)
    assert message.startswith(f"{file}: {path}:"), message
    assert hint in message, message


def test_valid_template_loads(tmp_path):
    file = tmp_path / "ok.yaml"
    file.write_text(yaml.safe_dump(VALID))
    assert load_preset(str(file)).space["optimizer.lr"].values == (0.001, 0.1)


def test_not_yaml_names_the_line(tmp_path):
    file = tmp_path / "broken.yaml"
    file.write_text("base:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+: not valid YAML"):
        load_preset(str(file))


def test_yaml_exponent_numbers_are_numbers(tmp_path):
    file = tmp_path / "exp.yaml"
    file.write_text(yaml.safe_dump(VALID).replace("lr: 0.05", "lr: 5e-2"))
    assert load_preset(str(file)).base.optimizer.lr == 0.05


def test_resources_the_cluster_cannot_satisfy(ray_session):
    preset = load_preset("quickstart", ["tune.resources.gpus=1"])
    with pytest.raises(ConfigError) as info:
        tune.check_resources(preset)
    message = str(info.value)
    assert message.startswith("search_spaces/quickstart.yaml (with --set tune.resources.gpus=1): tune.resources:")
    assert "1 GPU" in message and "--gpus-per-trial" in message


# ----------------------------------------------------------------------------- overrides


def test_override_pins_a_searched_value():
    preset = load_preset("quickstart", ["optimizer.lr=1e-3", "tune.num_samples=3"])
    assert preset.base.optimizer.lr == 1e-3
    assert "optimizer.lr" not in preset.space
    assert preset.tune.num_samples == 3


def test_override_replaces_a_space_entry():
    preset = load_preset("quickstart", ["space.optimizer.lr={loguniform: [1e-4, 1e-2]}"])
    assert preset.space["optimizer.lr"].values == (1e-4, 1e-2)


@pytest.mark.parametrize(
    ("override", "path", "hint"),
    [
        ("optimizer.lr=fast", "base.optimizer.lr", "expected a number"),
        ("tune.searcher=bayes", "tune.searcher", "optuna"),
        ("space.optimizer.lr={loguniform: [0.1, 0.01]}", "space.optimizer.lr", "low < high"),
        ("model.dense_depth=2", "base.model.dense_depth", "not an option of this model"),
    ],
)
def test_bad_override_names_the_path(override, path, hint):
    with pytest.raises(ConfigError) as info:
        load_preset("quickstart", [override])
    message = str(info.value)
    assert message.startswith(f"search_spaces/quickstart.yaml (with --set {override}): {path}:"), message
    assert hint in message


@pytest.mark.parametrize("name", preset_names())
def test_smoke_overrides_shrink_every_preset(name):
    args = tune.build_parser().parse_args(["--space", name, "--smoke"])
    preset = tune.resolve_preset(args)
    grid_size = 1
    for dist in preset.space.values():
        if dist.kind == "grid":
            grid_size *= len(dist.values)
    assert preset.tune.num_samples * grid_size <= 2
    assert preset.base.epochs <= 2 and preset.base.data.train_limit <= 512
    assert (preset.base.data.resize or 0) <= 64 and (preset.base.model.options.get("input_resize") or 0) <= 64
    assert preset.base.model.options.get("weights", "none") == "none"  # smoke never downloads
    assert preset.tune.resources.gpus == 0 and preset.tune.max_failures == 0


def test_switching_model_with_set_drops_options_the_new_model_lacks():
    preset = load_preset("quickstart", ["model.name=mlp"])
    assert preset.base.model.name == "mlp"
    assert "dense_width" not in preset.base.model.options  # a small_cnn option, not an MLP one
    assert preset.base.model.options["dropout"] == load_preset("quickstart").base.model.options["dropout"]
    with pytest.raises(ConfigError, match="model.dense_width"):
        load_preset("quickstart", ["model.name=mlp", "model.dense_width=64"])
