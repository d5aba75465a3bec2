"""Experiment tracking: one offline W&B run per trial, no key in any file, bounded cost without a network,
TensorBoard event files, and the W&B sweep export run by hand.

    .venv/bin/python -m pytest tests/test_wandb.py -q
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import pytest
import yaml

import tune
from analysis.results import EPOCH_METRICS, load_experiment
from search_spaces import load_preset
from search_spaces.tracking import api_key_configured, init_with_fallback, public_config, wandb_plan
from search_spaces.wandb_sweep import sweep_config

ROOT = Path(__file__).resolve().parents[1]
# Shaped like a real key (a prefix, then 40 word characters) so wandb accepts it and would use it.
SENTINEL_KEY = "sentinel-" + "S3NT1NEL" * 5

# W&B's sweep vocabulary (docs.wandb.ai, sweep configuration keys).
WANDB_DISTRIBUTIONS = {
    "constant",
    "categorical",
    "categorical_w_probabilities",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
    "beta",
    "q_beta",
}


# --------------------------------------------------------------- reading .wandb files


def wandb_records(path: Path):
    """The protobuf records of a .wandb file: W&B's LevelDB-style log (7-byte header, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block tail too short for a header is zero padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (crc, length, kind) == (0, 0, 0):
            pos += block - pos % block
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF == crc, f"{path}: corrupt record at {pos}"
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start, MIDDLE/LAST continue
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(pending)
            pending = b""


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # wandb-core writes history and summary keys as nested_key


def read_run(run_dir: Path) -> dict:
    """Run identity, config, history rows and final summary of one offline run folder."""
    (path,) = run_dir.glob("run-*.wandb")
    out = {"config": {}, "history": [], "summary": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            out.update(id=r.run_id, group=r.run_group, job_type=r.job_type, tags=list(r.tags), project=r.project)
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update if i.key != "_wandb"})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update if i.key != "_wandb"})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    return out


def offline_runs(wandb_root: Path) -> dict[str, list[dict]]:
    """Run id → its fragments (a run resumed offline is a second folder), oldest first."""
    runs: dict[str, list[dict]] = {}
    for run_dir in sorted((wandb_root / "wandb").glob("offline-run-*")):
        run = read_run(run_dir)
        runs.setdefault(run["id"], []).append(run)
    return runs


# ------------------------------------------------------------------------- searches


def _search(storage: Path, name: str, *extra: str, samples: int = 3, epochs: int = 3) -> tuple[float, str]:
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = tune.main(
            [
                "--space",
                "quickstart",
                "--num-samples",
                str(samples),
                "--max-epochs",
                str(epochs),
                "--storage-path",
                str(storage),
                "--name",
                name,
                "--quiet",
                "--set",
                "tune.top_k_test=1",
                *extra,
            ]
        )
    assert code == 0, out.getvalue()[-2000:]
    return time.perf_counter() - start, out.getvalue()


@pytest.fixture(scope="module")
def offline_search(ray_session, tmp_path_factory):
    """A smoke search with W&B offline, a planted API key in the environment and a private WANDB_DIR."""
    storage, wandb_dir = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_DIR", str(wandb_dir))
        mp.setenv("WANDB_API_KEY", SENTINEL_KEY)
        _, stdout = _search(storage, "wb", "--wandb", "tunelab-test")
    return {
        "exp": load_experiment(storage / "wb"),
        "wandb_dir": wandb_dir,
        "stdout": stdout,
        "runs": offline_runs(wandb_dir),
        "storage": storage,
    }


def test_one_offline_run_per_trial_grouped_by_experiment(offline_search):
    trials, runs = offline_search["exp"].trials, offline_search["runs"]
    assert set(runs) == set(trials["trial_id"])
    for fragments in runs.values():
        first = fragments[0]
        assert first["group"] == "wb" and first["job_type"] == "quickstart" and first["project"] == "tunelab-test"
        assert {"small_cnn", "digits", "optuna"} <= set(first["tags"])


def test_run_history_is_the_epochs_table(offline_search):
    epochs = offline_search["exp"].epochs
    for trial_id, fragments in offline_search["runs"].items():
        history = pd.DataFrame(fragments[0]["history"]).set_index("epoch").sort_index()
        expected = epochs[epochs["trial_id"] == trial_id].set_index("epoch").sort_index()
        assert list(history.index) == list(expected.index), trial_id
        for metric in EPOCH_METRICS:
            assert history[metric].tolist() == pytest.approx(expected[metric].tolist(), rel=1e-12), (trial_id, metric)


def test_run_config_is_the_trial_config(offline_search):
    trials = offline_search["exp"].trials.set_index("trial_id")
    searched = load_preset("quickstart").space
    for trial_id, fragments in offline_search["runs"].items():
        config = fragments[0]["config"]
        for column in (c for c in trials.columns if c.startswith("config.")):
            value = trials.loc[trial_id, column]
            key = column.removeprefix("config.")
            if isinstance(value, float) and math.isnan(value):
                assert config[key] is None, key
            elif isinstance(config[key], list):
                assert json.dumps(config[key]) == value, key
            elif isinstance(value, float):
                assert config[key] == pytest.approx(value), key
            else:
                assert config[key] == value, key
        assert set(searched) <= set(config)


def test_summaries_hold_status_and_test_results(offline_search):
    exp, runs = offline_search["exp"], offline_search["runs"]
    for trial_id, status in exp.trials.set_index("trial_id")["status"].items():
        assert runs[trial_id][0]["summary"]["status"] == status
    tested = exp.final[exp.final["kind"] == "top_k"]
    assert len(tested) == 1
    row = tested.iloc[0]
    # The test split is measured after the trial runs ended: the run is resumed by id for it.
    fragments = runs[row["trial_id"]]
    assert len(fragments) == 2
    assert fragments[-1]["summary"]["test/acc"] == pytest.approx(row["test/acc"])
    assert fragments[-1]["summary"]["test/rank"] == 1
    assert all(len(f) == 1 for trial_id, f in runs.items() if trial_id != row["trial_id"])


def test_summary_prints_the_sync_command(offline_search):
    stdout, wandb_dir = offline_search["stdout"], offline_search["wandb_dir"]
    line = next(line for line in stdout.splitlines() if "wandb sync" in line)
    assert str(wandb_dir / "wandb" / "offline-run-") in line
    assert "3 runs written offline" in line


def test_tensorboard_event_files_in_every_trial_folder(offline_search):
    exp = offline_search["exp"]
    for trial_id in exp.trials["trial_id"]:
        events = list((exp.path / trial_id).glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0, trial_id


def test_planted_api_key_is_in_no_written_file(offline_search, ray_session):
    roots = [offline_search["storage"], offline_search["wandb_dir"]]
    session_logs = Path(ray_session._private.worker._global_node.get_session_dir_path()) / "logs"
    files = [p for root in [*roots, session_logs] for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 20  # the search really wrote Ray, W&B and results files
    kinds = {p.suffix for p in files} | {p.name.split(".")[0] for p in files}
    assert {".parquet", ".wandb", ".json", ".log", "events"} <= kinds
    leaked = [p for p in files if SENTINEL_KEY.encode() in p.read_bytes()]
    assert not leaked


# -------------------------------------------------------------------- no network


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_costs_a_bounded_time(ray_session, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)
    baseline_s, _ = _search(tmp_path, "plain", samples=2, epochs=1)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", SENTINEL_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_unused_port()}")
    online_s, stdout = _search(tmp_path, "online", "--wandb", "tunelab-test", samples=2, epochs=1)
    # Runs fall back to offline files instead of failing or waiting on the network.
    trials = load_experiment(tmp_path / "online").trials
    assert set(offline_runs(tmp_path / "online")) == set(trials["trial_id"])
    assert "wandb sync" in stdout
    print(f"search without W&B {baseline_s:.1f}s, with W&B online against no server {online_s:.1f}s")
    assert online_s < 2.0 * baseline_s + 20, (online_s, baseline_s)


def test_online_run_that_cannot_start_is_written_offline(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_API_KEY", SENTINEL_KEY)
    kwargs = {
        "project": "p",
        "id": "fallback1",
        "mode": "online",
        "dir": str(tmp_path),
        "settings": {
            "base_url": f"http://127.0.0.1:{_unused_port()}",
            "init_timeout": 3,
            "silent": True,
            "console": "off",
        },
    }
    run = init_with_fallback(wandb, kwargs)
    assert run is not None and run.offline
    run.log({"val/acc": 0.5, "epoch": 1})
    run.finish()
    wandb.teardown()
    assert offline_runs(tmp_path)["fallback1"][0]["history"][0]["val/acc"] == 0.5


# ------------------------------------------------------------------ settings rules


def test_mode_is_offline_without_a_key_and_online_with_one(tmp_path, monkeypatch):
    preset = load_preset("quickstart")
    args = type("Args", (), {"wandb": "p", "wandb_mode": None})()
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_SWEEP_ID", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not api_key_configured() and wandb_plan(preset, args).mode == "offline"
    args.wandb_mode = "online"  # asked for, but there is nothing to log in with: offline, never a prompt
    assert wandb_plan(preset, args).mode == "offline"
    (tmp_path / "netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {SENTINEL_KEY}\n")
    (tmp_path / "netrc").chmod(0o600)
    args.wandb_mode = None
    assert wandb_plan(preset, args).mode == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_plan(preset, args).mode == "offline"
    args.wandb = None
    assert wandb_plan(preset, args) is None  # W&B stays off unless asked for


def test_config_keeps_no_secret_looking_keys():
    config = public_config({"optimizer.lr": 0.1, "logging.api_key": "x", "data.token": "y", "sizes": (1, 2)})
    assert config == {"optimizer.lr": 0.1, "sizes": [1, 2]}


# -------------------------------------------------------------------- sweep export


def test_grid_preset_exports_a_grid_sweep():
    import dataclasses

    from search_spaces.schema import Distribution

    preset = load_preset("quickstart")
    grid = dataclasses.replace(
        preset,
        space={"batch_size": Distribution("grid", (32, 64)), "model.width": Distribution("choice", (8, 16))},
        tune=dataclasses.replace(
            preset.tune, searcher="grid", scheduler=dataclasses.replace(preset.tune.scheduler, name="fifo")
        ),
    )
    args = type("Args", (), {"space": "quickstart", "resolved_overrides": [], "data_dir": None, "wandb": None})()
    config = sweep_config(grid, args)
    assert config["method"] == "grid" and "early_terminate" not in config
    assert config["parameters"] == {"batch_size": {"values": [32, 64]}, "model.width": {"values": [8, 16]}}


def _sample(spec: dict, rng: random.Random):
    kind = spec.get("distribution", "categorical")
    if kind == "categorical":
        return rng.choice(spec["values"])
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"])))
    if kind == "uniform":
        return rng.uniform(spec["min"], spec["max"])
    if kind == "int_uniform":
        return rng.randint(spec["min"], spec["max"])
    raise AssertionError(f"unexpected distribution {kind}")


def test_sweep_export_round_trips_and_its_command_trains_one_trial(tmp_path):
    path = tmp_path / "sweep.yaml"
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            tune.main(
                [
                    "--space",
                    "quickstart",
                    "--max-epochs",
                    "2",
                    "--export-wandb-sweep",
                    str(path),
                    "--wandb",
                    "tunelab-test",
                ]
            )
            == 0
        )
    config = yaml.safe_load(path.read_text())
    preset = load_preset("quickstart")
    assert config["method"] == "bayes" and config["program"] == "tune.py" and config["project"] == "tunelab-test"
    assert config["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert config["early_terminate"] == {"type": "hyperband", "min_iter": 2, "eta": 3}
    assert config["run_cap"] == preset.tune.num_samples
    assert set(config["parameters"]) == set(preset.space)
    for name, spec in config["parameters"].items():
        assert set(spec) in ({"values"}, {"distribution", "min", "max"}), name
        assert spec.get("distribution", "categorical") in WANDB_DISTRIBUTIONS
    assert config["parameters"]["optimizer.lr"] == {"distribution": "log_uniform_values", "min": 0.0003, "max": 0.3}
    assert yaml.safe_load(yaml.safe_dump(config)) == config

    # Run the command as a W&B agent would: macros filled in, sampled values as key=value.
    rng = random.Random(0)
    sampled = [f"{name}={_sample(spec, rng)}" for name, spec in config["parameters"].items()]
    fill = {
        "${env}": ["/usr/bin/env"],
        "${interpreter}": [sys.executable],
        "${program}": [config["program"]],
        "${args_no_hyphens}": sampled,
    }
    command = [part for item in config["command"] for part in fill.get(item, [item])]
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SWEEP_ID": "sweep01",
        "WANDB_RUN_ID": "agentrun1",
        "WANDB_SILENT": "true",
    }
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "epoch   2" in done.stdout and "test/acc" in done.stdout
    (run,) = offline_runs(tmp_path)["agentrun1"]
    assert [row["epoch"] for row in run["history"]] == [1, 2]
    assert all(0 <= row["val/acc"] <= 1 for row in run["history"])  # the sweep's metric, every epoch
    lr = float(next(s for s in sampled if s.startswith("optimizer.lr=")).split("=")[1])
    assert run["config"]["optimizer.lr"] == pytest.approx(lr) and run["config"]["epochs"] == 2
    assert "test/acc" not in run["summary"]  # sweep runs carry validation metrics only
