"""A preset's search as a W&B sweep configuration, for ``wandb sweep`` and ``wandb agent``.

    python tune.py --space quickstart --export-wandb-sweep sweep.yaml   # write the sweep
    wandb sweep sweep.yaml                                              # register it; prints the id
    wandb agent <entity>/<project>/<sweep id>                           # run trials from this checkout

Every run of the sweep is ``tune.py --space <preset> --single-trial`` with the values W&B
samples passed as ``key=value`` overrides (the agent's ``${args_no_hyphens}``), so a
sampled config goes through the same validation as ``--set``. The single-trial mode logs
each epoch's metrics to the run the agent started, which is what the sweep's metric and
early termination read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from search_spaces.errors import ConfigError
from search_spaces.schema import Distribution, Preset


def _log_uniform(d: Distribution) -> dict[str, Any]:
    return {"distribution": "log_uniform_values", "min": d.values[0], "max": d.values[1]}


def _uniform(d: Distribution) -> dict[str, Any]:
    return {"distribution": "uniform", "min": d.values[0], "max": d.values[1]}


def _int_uniform(d: Distribution) -> dict[str, Any]:
    # randint is [low, high) as in Ray Tune; W&B's int_uniform includes its max.
    return {"distribution": "int_uniform", "min": d.values[0], "max": d.values[1] - 1}


def _values(d: Distribution) -> dict[str, Any]:
    return {"values": list(d.values)}


# The preset vocabulary (search_spaces/schema.py DISTRIBUTIONS) → W&B's parameter vocabulary.
SWEEP_DISTRIBUTIONS = {
    "loguniform": _log_uniform,
    "uniform": _uniform,
    "randint": _int_uniform,
    "choice": _values,
    "grid": _values,  # with method grid W&B crosses every `values` list, like Ray's grid_search
}
SWEEP_METHODS = {"optuna": "bayes", "random": "random", "grid": "grid"}
# ASHA and HyperBand stop poor trials at rungs; W&B's hyperband early termination is their counterpart.
HYPERBAND_SCHEDULERS = ("asha", "hyperband")


def sweep_config(preset: Preset, args: Any) -> dict[str, Any]:
    """The sweep configuration: method, metric, parameters, early termination, command.

    ``args`` is tune.py's namespace: ``space``, ``resolved_overrides`` (every --set and flag
    override, repeated in the command so each run trains the same preset), ``data_dir``,
    ``no_download`` and ``wandb`` (the project).
    """
    tune = preset.tune
    if not preset.space:
        raise ConfigError(preset.source, "space", "nothing is searched, so there is no sweep to export")
    parameters = {path: SWEEP_DISTRIBUTIONS[d.kind](d) for path, d in preset.space.items()}
    command = ["${env}", "${interpreter}", "${program}", "--space", str(args.space), "--single-trial"]
    for item in getattr(args, "resolved_overrides", None) or []:
        command += ["--set", item]
    # W&B is the searcher now: each run pins every searched value, which leaves the preset's
    # space empty, and only Optuna insists on a non-empty one.
    command += ["--set", "tune.searcher=random"]
    if getattr(args, "data_dir", None) not in (None, Path("data")):  # tune.py's default needs no flag
        command += ["--data-dir", str(args.data_dir)]
    if getattr(args, "no_download", False):
        command.append("--no-download")
    command.append("${args_no_hyphens}")  # the sampled values as key=value overrides
    config: dict[str, Any] = {
        "program": "tune.py",
        "name": preset.name,
        "description": preset.description or preset.name,
        "method": SWEEP_METHODS[tune.searcher],
        "metric": {"name": tune.metric, "goal": "maximize" if tune.mode == "max" else "minimize"},
        "parameters": parameters,
        "run_cap": tune.num_samples,
        "command": command,
    }
    if tune.scheduler.name in HYPERBAND_SCHEDULERS:
        eta = float(tune.scheduler.reduction_factor)
        config["early_terminate"] = {
            "type": "hyperband",
            "min_iter": min(tune.scheduler.grace_period_epochs, preset.base.epochs),
            "eta": int(eta) if eta.is_integer() else eta,
        }
    project = getattr(args, "wandb", None) or preset.logging.wandb.project
    if project:
        config["project"] = project
    if preset.logging.wandb.entity:
        config["entity"] = preset.logging.wandb.entity
    return config


def export_sweep(preset: Preset, args: Any, path: Path) -> dict[str, Any]:
    """Write ``sweep_config`` as YAML to ``path``, under a header that says how to run it."""
    config = sweep_config(preset, args)
    path = Path(path)
    header = (
        f"# W&B sweep for preset {preset.name}, written by tune.py --export-wandb-sweep.\n"
        "# From the tunelab checkout, with its environment active (the agent runs `python tune.py`):\n"
        f"#   wandb sweep {path.name}\n"
        "#   wandb agent <entity>/<project>/<sweep id>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, width=100))
    return config
