"""tunelab's front door: search a preset's hyperparameter space with Ray Tune.

    python tune.py --list                                   # presets, one line each
    python tune.py --space quickstart                       # local Ray, offline digits search
    python tune.py --space cifar_resnet50 --data-dir data   # downloads CIFAR-10 when online
    python tune.py --space cifar_resnet18 --single-trial --set optimizer.lr=0.05   # one config, no Ray
    python tune.py --space quickstart --name qs --resume    # continue an interrupted search
    ray submit cluster/gpu.yaml tune.py -- --space cifar_resnet50   # on a cluster

Flow: parse → load and validate the preset → load data once → Tuner(fit) →
measure the test set once for the top-k trials' best checkpoints → write the
results store (trials/epochs/final Parquet + experiment.json) → print a summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from search_spaces import ConfigError, Preset, list_presets, load_preset

log = logging.getLogger("tunelab")

RUN_FILE = "tunelab_run.json"  # how the experiment was started, so --resume can rebuild it


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tune.py",
        description="Search a preset's hyperparameter space with Ray Tune, Optuna and ASHA.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  python tune.py --space quickstart\n"
        "  python tune.py --space mnist_resnet18 --data-dir ../shared/data --smoke\n"
        "  python tune.py --space cifar_resnet18 --single-trial --set optimizer.lr=0.05",
    )
    p.add_argument("--space", metavar="NAME", help="preset name from search_spaces/ (see --list) or a YAML path")
    p.add_argument("--list", action="store_true", help="print every preset with its purpose and budget, then exit")
    p.add_argument("--num-samples", type=_positive_int, metavar="N", help="number of trials (default: the preset's)")
    p.add_argument("--max-epochs", type=_positive_int, metavar="N", help="epochs per trial, the scheduler's max_t")
    p.add_argument("--searcher", choices=("optuna", "random", "grid"), help="search algorithm (default: preset's)")
    p.add_argument(
        "--scheduler",
        choices=("asha", "hyperband", "median", "pbt", "fifo"),
        help="trial scheduler (default: preset's)",
    )
    p.add_argument("--seed", type=_non_negative_int, metavar="N", help="seeds the searcher and model initialisation")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        metavar="DIR",
        help="data sets in torchvision's layout (default: ./data)",
    )
    p.add_argument(
        "--no-download", action="store_true", help="never download data; fail with the missing files instead"
    )
    p.add_argument(
        "--storage-path",
        default=os.environ.get("TUNELAB_STORAGE_PATH", "results"),
        metavar="PATH",
        help="where Ray writes experiments: a folder every Ray node can reach (shared, e.g. NFS, on a cluster) "
        "or a cloud URI (s3://bucket/path, gs://…); default: $TUNELAB_STORAGE_PATH, else ./results",
    )
    p.add_argument(
        "--results-dir",
        default=os.environ.get("TUNELAB_RESULTS_DIR", "results"),
        metavar="DIR",
        help="local folder for the results store when --storage-path is a cloud URI "
        "(default: $TUNELAB_RESULTS_DIR, else ./results); with a folder --storage-path both are the same",
    )
    p.add_argument("--name", metavar="NAME", help="experiment name (default: <preset>-<timestamp>); needed by --resume")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        metavar="ADDR",
        help="connect to a running Ray cluster (e.g. auto, 10.0.0.5:6379); default: $RAY_ADDRESS, else start a local one",
    )
    p.add_argument("--cpus-per-trial", type=_positive_float, metavar="N", help="CPUs each trial reserves")
    p.add_argument(
        "--gpus-per-trial",
        type=_non_negative_float,
        metavar="F",
        help="GPUs each trial reserves; fractions pack trials on one GPU",
    )
    p.add_argument("--max-concurrent", type=_positive_int, metavar="N", help="trials running at once")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset value, e.g. optimizer.lr=0.01 or tune.num_samples=8 (repeatable); pinning a searched value removes it from the space",
    )
    p.add_argument("--smoke", action="store_true", help="tiny budget (few trials, epochs and images) for CI")
    p.add_argument(
        "--resume", action="store_true", help="resume experiment --name from --storage-path after a crash or stop"
    )
    p.add_argument(
        "--single-trial", action="store_true", help="train the base config once, in this process, without Ray"
    )
    p.add_argument(
        "--top-k",
        type=_non_negative_int,
        metavar="K",
        help="trials whose best checkpoint is tested (default: preset's top_k_test)",
    )
    p.add_argument(
        "--confirm",
        type=_positive_int,
        metavar="N",
        help="after the search, re-train the best config with N fresh seeds (full epochs, no early stopping) and test each once",
    )
    p.add_argument(
        "--confirm-top",
        type=_positive_int,
        default=1,
        metavar="K",
        help="with --confirm: re-train the top K configs, not only the best (default 1)",
    )
    p.add_argument("--num-cpus", type=_positive_int, metavar="N", help="CPUs for the local Ray instance (default: all)")
    p.add_argument("--quiet", action="store_true", help="no Ray progress table")
    p.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="log every trial as a W&B run in PROJECT (offline unless an API key is configured)",
    )
    p.add_argument(
        "--wandb-mode",
        choices=("auto", "online", "offline", "disabled"),
        help="W&B mode (default: preset's logging.wandb.mode, then WANDB_MODE, then online only with an API key)",
    )
    p.add_argument(
        "--export-wandb-sweep",
        type=Path,
        metavar="FILE",
        help="write the preset's space as a W&B sweep YAML (for wandb sweep/agent), then exit",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="more overrides, as with --set (how a W&B sweep agent passes its values)",
    )
    return p


def _number(kind: type, check, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v > 0, "an integer > 0")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: v > 0, "a number > 0")
_non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """The flags that change the preset, as --set overrides (so they pass the same validation)."""
    pairs = [
        ("tune.num_samples", args.num_samples),
        ("base.epochs", args.max_epochs),
        ("tune.searcher", args.searcher),
        ("tune.scheduler.name", args.scheduler),
        ("tune.seed", args.seed),
        ("base.seed", args.seed),
        ("tune.resources.cpus", args.cpus_per_trial),
        ("tune.resources.gpus", args.gpus_per_trial),
        ("tune.max_concurrent_trials", args.max_concurrent),
        ("tune.top_k_test", args.top_k),
    ]
    return [f"{key}={value}" for key, value in pairs if value is not None]


# Smoke mode: every preset on 2 CPU cores in well under a minute, still through Ray, the
# searcher, the scheduler, checkpoints, the test measurement and the results store.
SMOKE_TRAIN_IMAGES = 64
SMOKE_TEST_IMAGES = 32
SMOKE_IMAGE_SIDE = 16  # px; a CIFAR-stem ResNet50 costs ~0.25 s per 32x32 image on one CPU core
SMOKE_MODEL_INPUT_SIDE = 32  # cap on in-model upsampling (S4 upsamples to 256)


def smoke_overrides(preset: Preset) -> list[str]:
    """Shrink a preset to finish on 2 CPU cores in about a minute, keeping its structure.

    At most two trials of at most two epochs on ``SMOKE_TRAIN_IMAGES`` images of at most
    ``SMOKE_IMAGE_SIDE`` pixels; pretrained weights are replaced by ``none`` (smoke runs
    offline); a grid keeps two values of its first searched field and the first value of
    the others; failed trials are not retried, so an error shows up as an error.
    """
    base, tune_cfg = preset.base, preset.tune
    grids = [path for path, dist in preset.space.items() if dist.kind == "grid"]
    out = [
        f"tune.num_samples={1 if grids else min(tune_cfg.num_samples, 2)}",
        f"base.epochs={min(base.epochs, 2)}",
        "tune.max_concurrent_trials=2",
        "tune.resources.cpus=1",
        "tune.resources.gpus=0",
        "tune.max_failures=0",
        f"tune.top_k_test={min(tune_cfg.top_k_test, 1)}",
        f"base.data.train_limit={min(base.data.train_limit or SMOKE_TRAIN_IMAGES, SMOKE_TRAIN_IMAGES)}",
        f"base.data.test_limit={min(base.data.test_limit or SMOKE_TEST_IMAGES, SMOKE_TEST_IMAGES)}",
        "base.compile=false",
        f"base.data.resize={min(base.data.resize or SMOKE_IMAGE_SIDE, SMOKE_IMAGE_SIDE)}",  # pins a searched size too
    ]
    if "batch_size" not in preset.space:  # pinning a searched value would drop it from the space
        out.append(f"base.batch_size={min(base.batch_size, 32)}")
    if base.model.options.get("weights", "none") != "none" or "model.weights" in preset.space:
        out.append("base.model.weights=none")
    if base.model.options.get("input_resize") or "model.input_resize" in preset.space:
        out.append(f"base.model.input_resize={SMOKE_MODEL_INPUT_SIDE}")
    pinned = {"data.resize", "model.weights", "model.input_resize"}
    kept = [path for path in grids if path not in pinned]
    for index, path in enumerate(kept):
        values = list(preset.space[path].values)[: 2 if index == 0 else 1]
        out.append(f"space.{path}={json.dumps({'grid': values})}")
    if tune_cfg.scheduler.name in ("asha", "hyperband", "median"):
        out.append("tune.scheduler.grace_period_epochs=1")
    if tune_cfg.scheduler.name == "pbt":
        out.append("tune.scheduler.perturbation_interval_epochs=1")
    return out


def resolve_preset(args: argparse.Namespace) -> Preset:
    """The preset with --set, flag and --smoke overrides applied (all validated the same way)."""
    overrides = [*args.set, *args.overrides, *cli_overrides(args)]
    preset = load_preset(args.space, overrides)
    if args.smoke:
        overrides = [*smoke_overrides(preset), *overrides]
        preset = load_preset(args.space, overrides)
    args.resolved_overrides = overrides
    return preset


# ------------------------------------------------------------------------ commands


def print_presets() -> None:
    presets = list_presets()
    width = max(len(p.name) for p in presets)
    for preset in presets:
        budget = f"  [{preset.budget}]" if preset.budget else ""
        print(f"{preset.name:<{width}}  {preset.description}{budget}")


def run_single_trial(preset: Preset, args: argparse.Namespace) -> int:
    """Train ``preset.base`` once in this process, print per-epoch metrics and the test result."""
    from trainables.data import load_dataset
    from trainables.loop import DivergedError
    from trainables.recipe import TrialRun

    splits = load_dataset(preset.base.data, args.data_dir, download=not args.no_download)
    run = TrialRun(preset.base, splits.without_test())
    tracker = _single_trial_tracker(preset, args)
    print(
        f"{preset.base.model.name}: {run.num_params:,} parameters on {run.device}; "
        f"{len(splits.train_labels):,} train / {len(splits.val_labels):,} val / {len(splits.test_labels):,} test images"
    )
    start = time.perf_counter()
    try:
        while not run.finished:
            m = run.run_epoch()
            if tracker:
                tracker.log_epoch(m)
            print(
                f"epoch {m['epoch']:>3}  train/loss {m['train/loss']:.4f}  train/acc {m['train/acc']:.4f}  "
                f"val/loss {m['val/loss']:.4f}  val/acc {m['val/acc']:.4f}  lr {m['lr']:.2e}  "
                f"{m['time/epoch_s']:.1f}s  {m['throughput/img_s']:,.0f} img/s",
                flush=True,
            )
    except DivergedError as err:
        print(f"diverged: {err}")
        if tracker:
            tracker.finish("diverged")
        return 1
    test_loss, test_acc = run.evaluate_images(splits.test_images, splits.test_labels)
    result = {
        "val/acc_best": run.best_val_acc,
        "test/acc": test_acc,
        "test/loss": test_loss,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(
        f"test/acc {test_acc:.4f}  test/loss {test_loss:.4f}  (best val/acc {run.best_val_acc:.4f}, "
        f"{result['wall_s']}s)"
    )
    if tracker:
        tracker.finish("completed", {"test/acc": test_acc, "test/loss": test_loss})
    return 0


def run_search(preset: Preset, args: argparse.Namespace) -> int:
    """Search, measure the top-k on the test set, write the results store, print the summary."""
    import pandas as pd

    from analysis.results import write_results
    from trainables.data import load_dataset

    name = args.name or f"{preset.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    args.ray_experiment, exp_dir = storage_locations(args, name)
    check_address(args.address)  # before loading data: an unreachable cluster fails in seconds
    splits = load_dataset(preset.base.data, args.data_dir, download=not args.no_download)
    _connect_ray(args, preset)
    started = time.time()
    results = _fit(preset, args, exp_dir, splits)
    trials, epochs = collect_results(results, preset)
    final = measure_test(results, trials, preset, splits)
    if len(final):
        trials = trials.merge(final[["trial_id", "test/acc", "test/loss"]], on="trial_id", how="left")
    confirm_notes: list[str] = []
    if args.confirm:
        confirm = confirm_best(results, trials, preset, args, exp_dir, splits)
        final = pd.concat([final, confirm], ignore_index=True) if len(final) else confirm
        confirm_notes = confirm_summary_lines(confirm)
    meta = experiment_metadata(preset, args, name, started, splits)
    files = write_results(exp_dir, trials, epochs, meta, final)
    outcome = {
        "name": name,
        "metric": preset.tune.metric,
        "mode": preset.tune.mode,
        "trials": trials,
        "searched_columns": [f"config.{p}" for p in preset.space],
        "results_dir": exp_dir,
        "files": files,
        "notes": _tracking_after_search(preset, args, exp_dir, results, final),
    }
    if len(final):
        top = final.sort_values("rank").iloc[0]
        outcome["best_test"] = {
            "trial_id": top["trial_id"],
            "val": float(top["val_best"]),
            "test/acc": float(top["test/acc"]),
            "test_images": int(top["test_images"]),
        }
    outcome["notes"] = [*outcome.get("notes", []), *confirm_notes]
    print_summary(outcome)
    return 0


def storage_locations(args: argparse.Namespace, name: str) -> tuple[str, Path]:
    """(Ray's experiment path, the local results folder) for experiment ``name``.

    With a folder --storage-path both are ``<storage>/<name>``. With a cloud URI Ray writes
    trial folders and checkpoints there (every node uploads its own), while the results
    store, the Optuna journal and the run file stay in ``<results-dir>/<name>`` on the driver.
    """
    if "://" in args.storage_path:
        return f"{args.storage_path.rstrip('/')}/{name}", Path(args.results_dir).expanduser().resolve() / name
    local = Path(args.storage_path).expanduser().resolve() / name
    return str(local), local


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds with one line when nothing listens at ``--address`` (``ray.init`` retries for minutes)."""
    import socket

    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("--address", "", f"expected HOST:PORT (e.g. 10.0.0.5:6379) or auto, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(
            f"cannot reach a Ray cluster at --address {address} ({err.strerror or type(err).__name__}); "
            "start one with `ray start --head` or drop --address to run locally"
        ) from None


def _connect_ray(args: argparse.Namespace, preset: Preset) -> None:
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False}
        if args.address:
            try:
                ray.init(address=args.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise ConnectionError(
                    f"cannot reach a Ray cluster at --address {args.address} ({str(err).splitlines()[0]}); "
                    "start one with `ray start --head` or drop --address to run locally"
                ) from None
        else:
            ray.init(address="local", num_cpus=args.num_cpus, **kwargs)  # never attach to a stray cluster
    try:
        check_resources(preset)
    except ConfigError as err:
        if not args.address:
            raise
        # An autoscaling cluster (cluster/gpu.yaml starts with no GPU workers) adds the node later.
        log.warning("%s; trials wait until the autoscaler adds such a node", err)


def check_resources(preset: Preset) -> None:
    """Fail before searching when no node could ever run one trial."""
    import ray

    need_cpu, need_gpu = preset.tune.resources.cpus, preset.tune.resources.gpus
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= need_cpu and r.get("GPU", 0) >= need_gpu for r in nodes):
        return
    biggest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    raise ConfigError(
        preset.source,
        "tune.resources",
        f"each trial needs {need_cpu:g} CPU and {need_gpu:g} GPU but the largest node has "
        f"{biggest.get('CPU', 0):g} CPU and {biggest.get('GPU', 0):g} GPU; "
        "lower --cpus-per-trial/--gpus-per-trial or add nodes",
    )


def _fit(preset: Preset, args: argparse.Namespace, exp_dir: Path, splits: Any) -> Any:
    from ray import tune

    from search_spaces.domains import param_space
    from search_spaces.search import build_scheduler, build_searcher, checkpoints_to_keep
    from trainables.adapter import train_trial

    resources = preset.tune.resources
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=splits.without_test(), gpu_fraction=resources.gpus),
        {"cpu": resources.cpus, "gpu": resources.gpus},
    )
    if args.resume:
        if not tune.Tuner.can_restore(args.ray_experiment):
            raise ConfigError("--resume", "", f"no Ray experiment state in {args.ray_experiment}; nothing to resume")
        tuner = tune.Tuner.restore(
            args.ray_experiment, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
        return tuner.fit()
    if (exp_dir / RUN_FILE).exists():
        raise ConfigError("--name", "", f"experiment {exp_dir} already exists; use --resume or another --name")
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / RUN_FILE).write_text(json.dumps({"space": args.space, "set": args.resolved_overrides}, indent=2))
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(preset),
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(preset, exp_dir / "optuna.journal"),
            scheduler=build_scheduler(preset),
            num_samples=preset.tune.num_samples,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=True,  # a new actor per trial re-imports torch: seconds per trial on small CPUs
        ),
        run_config=tune.RunConfig(
            name=exp_dir.name,
            storage_path=args.ray_experiment.rsplit("/", 1)[0],
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=checkpoints_to_keep(
                    preset
                ),  # the best by the metric (all under PBT); Ray keeps the latest too
                checkpoint_score_attribute=preset.tune.metric,
                checkpoint_score_order=preset.tune.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=preset.tune.max_failures),
            callbacks=_callbacks(preset, args, exp_dir),
            verbose=0 if args.quiet else 1,
        ),
    )
    return tuner.fit()


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _callbacks(preset: Preset, args: argparse.Namespace, exp_dir: Path) -> list[Any]:
    from search_spaces.tracking import search_callbacks

    return search_callbacks(preset, args, exp_dir)


def _tracking_after_search(
    preset: Preset, args: argparse.Namespace, exp_dir: Path, results: Any, final: Any
) -> list[str]:
    """Test results into the W&B runs' summaries; the lines that say where the runs are."""
    from search_spaces.tracking import after_search

    return after_search(preset, args, exp_dir, final, {_trial_id(r): dict(r.config or {}) for r in results})


def _single_trial_tracker(preset: Preset, args: argparse.Namespace) -> Any:
    from search_spaces.tracking import single_trial_run

    return single_trial_run(preset, args)


def collect_results(results: Any, preset: Preset) -> tuple[Any, Any]:
    """One row per trial and one per trial-epoch from Ray's ResultGrid (epochs de-duplicated)."""
    import pandas as pd

    from analysis.results import EPOCH_METRICS

    trial_rows, epoch_frames = [], []
    for result in results:
        trial_id = _trial_id(result)
        history = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
        if len(history) and "epoch" in history:
            # A trial restored from a checkpoint re-reports from there: keep each epoch once, last write wins.
            history = history.drop_duplicates(subset="epoch", keep="last").sort_values("epoch")
            frame = history[[c for c in ("epoch", *EPOCH_METRICS, "status", "node_id") if c in history]].copy()
            frame.insert(0, "trial_id", trial_id)
            epoch_frames.append(frame)
        trial_rows.append(_trial_row(result, trial_id, history))
    trials = pd.DataFrame(trial_rows)
    epochs = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame(columns=["trial_id", "epoch"])
    return trials, epochs


def _trial_row(result: Any, trial_id: str, history: Any) -> dict[str, Any]:
    last = result.metrics or {}
    healthy = history[history["status"].isin(["running", "completed"])] if "status" in history else history
    row: dict[str, Any] = {"trial_id": trial_id, "status": _trial_status(result, last)}
    row["epochs_run"] = int(history["epoch"].max()) if "epoch" in history and len(history) else 0
    for metric in ("val/acc", "val/loss", "train/acc", "train/loss"):
        row[metric] = float(last.get(metric, float("nan")))
        values = healthy[metric] if metric in healthy else []
        best = (max if metric.endswith("acc") else min)(values) if len(values) else float("nan")
        row[f"{metric}_best"] = float(best)
    # val/acc_best is the metric of record: best validation accuracy over healthy epochs.
    row["val/acc_best"] = 0.0 if row["val/acc_best"] != row["val/acc_best"] else row["val/acc_best"]
    if len(healthy) and "val/acc" in healthy:
        row["best_epoch"] = int(healthy.loc[healthy["val/acc"].idxmax(), "epoch"])
    else:
        row["best_epoch"] = 0
    row["time_total_s"] = float(history["time/epoch_s"].sum()) if "time/epoch_s" in history else 0.0
    row["model/params"] = int(last.get("model/params", 0) or 0)
    row["model/flops"] = int(last.get("model/flops", 0) or 0)
    row["error"] = str(result.error).strip().splitlines()[-1][:500] if result.error else ""
    row.update({f"config.{k}": _scalar(v) for k, v in (result.config or {}).items()})
    return row


def _trial_id(result: Any) -> str:
    return (result.metrics or {}).get("trial_id") or Path(result.path).name


def _trial_status(result: Any, last: dict[str, Any]) -> str:
    if result.error is not None:
        return "error"
    status = last.get("status")
    if status in ("diverged", "oom", "completed"):
        return status
    return "stopped"  # ended before its last epoch: the scheduler stopped it


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict, tuple)) else value


def measure_test(results: Any, trials: Any, preset: Preset, splits: Any) -> Any:
    """Evaluate the top-k trials' best checkpoints once on the test split (never used for selection)."""
    import pandas as pd

    best_col = "val/acc_best" if preset.tune.metric in ("val/acc", "val/acc_best") else f"{preset.tune.metric}_best"
    eligible = trials[trials["status"].isin(["completed", "stopped"])]
    top = eligible.sort_values(best_col, ascending=preset.tune.mode == "min").head(preset.tune.top_k_test)
    by_id = {_trial_id(r): r for r in results}
    rows = []
    for rank, trial_id in enumerate(top["trial_id"], start=1):
        result = by_id[trial_id]
        tested = _test_best_checkpoint(result, preset, splits)
        if tested is None:
            continue
        rows.append(
            {
                "trial_id": trial_id,
                "rank": rank,
                "kind": "top_k",
                "seed": int(result.config.get("seed", 0)),
                "val_best": float(top.set_index("trial_id").loc[trial_id, best_col]),
                **tested,
            }
        )
    return pd.DataFrame(rows)


def _test_best_checkpoint(result: Any, preset: Preset, splits: Any) -> dict[str, Any] | None:
    """Load a trial's best checkpoint (by the preset's metric) and measure the test split once."""
    from trainables.config import TrainConfig
    from trainables.recipe import TrialRun

    checkpoint = result.get_best_checkpoint(preset.tune.metric, preset.tune.mode)
    if checkpoint is None:
        log.warning("trial %s has no checkpoint; not tested", _trial_id(result))
        return None
    run = TrialRun(TrainConfig.from_flat(result.config), _evaluation_only(splits))
    with checkpoint.as_directory() as directory:
        run.load(Path(directory), weights_only=True)
    test_loss, test_acc = run.evaluate_images(splits.test_images, splits.test_labels)
    return {
        "checkpoint_epoch": run.epoch,
        "test/acc": test_acc,
        "test/loss": test_loss,
        "test_images": len(splits.test_labels),
    }


def confirm_best(
    results: Any, trials: Any, preset: Preset, args: argparse.Namespace, exp_dir: Path, splits: Any
) -> Any:
    """Re-train the top ``--confirm-top`` configs with ``--confirm`` fresh seeds and test each run once.

    Each config is re-run through a second Tuner over the same trainable with a grid over
    ``seed`` (the search's seed + 1 … + N, so no re-run repeats the search's own), all
    epochs, FIFO: nothing is stopped early, so the spread is seed noise, not scheduling.
    Runs land in ``<experiment>/<name>-confirm`` (``-confirm-<rank>`` beyond the best)."""
    import pandas as pd

    best_col = "val/acc_best" if preset.tune.metric in ("val/acc", "val/acc_best") else f"{preset.tune.metric}_best"
    eligible = trials[trials["status"].isin(["completed", "stopped"])]
    top = eligible.sort_values(best_col, ascending=preset.tune.mode == "min").head(args.confirm_top)
    by_id = {_trial_id(r): r for r in results}
    rows = []
    for rank, source_id in enumerate(top["trial_id"], start=1):
        config = dict(by_id[source_id].config)
        seeds = [int(config.get("seed", 0)) + 1 + i for i in range(args.confirm)]
        name = f"{exp_dir.name}-confirm" + (f"-{rank}" if rank > 1 else "")
        log.info("confirming trial %s with seeds %s in %s", source_id, seeds, exp_dir / name)
        for result in _fit_confirm(config, seeds, preset, args, exp_dir / name, splits):
            history = result.metrics_dataframe
            healthy = (
                history[history["status"].isin(["running", "completed"])]
                if history is not None and "status" in history
                else history
            )
            tested = _test_best_checkpoint(result, preset, splits) or {
                "test/acc": float("nan"),
                "test/loss": float("nan"),
            }
            rows.append(
                {
                    "trial_id": _trial_id(result),
                    "rank": rank,
                    "kind": "confirm",
                    "seed": int(result.config["seed"]),
                    "source_trial_id": source_id,
                    "status": _trial_status(result, result.metrics or {}),
                    "epochs_run": int(history["epoch"].max())
                    if history is not None and "epoch" in history and len(history)
                    else 0,
                    "val_best": float(healthy["val/acc"].max())
                    if healthy is not None and "val/acc" in healthy and len(healthy)
                    else float("nan"),
                    **tested,
                }
            )
    return pd.DataFrame(rows)


def _fit_confirm(
    config: dict[str, Any], seeds: list[int], preset: Preset, args: argparse.Namespace, run_dir: Path, splits: Any
) -> Any:
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from trainables.adapter import train_trial

    resources = preset.tune.resources
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=splits.without_test(), gpu_fraction=resources.gpus),
        {"cpu": resources.cpus, "gpu": resources.gpus},
    )
    ray_run = f"{args.ray_experiment}/{run_dir.name}"  # beside the search's trials, wherever Ray stores them
    if args.resume and tune.Tuner.can_restore(ray_run):
        return tune.Tuner.restore(ray_run, trainable=trainable, resume_unfinished=True, resume_errored=True).fit()
    tuner = tune.Tuner(
        trainable,
        param_space={**config, "seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(max_concurrent=preset.tune.max_concurrent_trials),
            scheduler=FIFOScheduler(),
            num_samples=1,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=run_dir.name,
            storage_path=args.ray_experiment,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=preset.tune.metric,
                checkpoint_score_order=preset.tune.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=preset.tune.max_failures),
            verbose=0 if args.quiet else 1,
        ),
    )
    return tuner.fit()


def confirm_summary_lines(confirm: Any) -> list[str]:
    """One line per confirmed config: test/acc mean ± std over its seeds."""
    lines = []
    for source_id, group in confirm.groupby("source_trial_id", sort=False):
        acc = group["test/acc"].dropna()
        std = acc.std(ddof=1) if len(acc) > 1 else float("nan")
        lines.append(
            f"Confirm (trial {source_id}'s config, seeds {', '.join(str(s) for s in group['seed'])}, full epochs, "
            f"FIFO): test/acc {acc.mean():.4f} ± {std:.4f} (mean ± std over {len(acc)} runs; "
            f"min {acc.min():.4f}, max {acc.max():.4f})"
        )
    return lines


def _evaluation_only(splits: Any) -> Any:
    """The splits with train/val cut to two images: building a TrialRun for testing copies no training data."""
    import dataclasses

    return dataclasses.replace(
        splits,
        train_images=splits.train_images[:2],
        train_labels=splits.train_labels[:2],
        val_images=splits.val_images[:2],
        val_labels=splits.val_labels[:2],
    )


def experiment_metadata(
    preset: Preset, args: argparse.Namespace, name: str, started: float, splits: Any
) -> dict[str, Any]:
    """Provenance written next to the results: preset, resolved config, commit, versions, hardware."""
    import platform
    import subprocess
    from importlib import metadata

    import ray
    import torch

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "name": name,
        "preset": preset.name,
        "preset_source": preset.source,
        "preset_text": preset.text,
        "overrides": args.resolved_overrides,
        "description": preset.description,
        "base": preset.base.to_flat(),
        "space": {path: {d.kind: list(d.values)} for path, d in preset.space.items()},
        "searched": list(preset.space),
        "tune": {
            "metric": preset.tune.metric,
            "mode": preset.tune.mode,
            "searcher": preset.tune.searcher,
            "scheduler": preset.tune.scheduler.name,
            "num_samples": preset.tune.num_samples,
            "grace_period_epochs": preset.tune.scheduler.grace_period_epochs,
            "reduction_factor": preset.tune.scheduler.reduction_factor,
            "max_epochs": preset.base.epochs,
        },
        "reference": preset.reference,
        "data": {
            "name": splits.name,
            "train_images": len(splits.train_labels),
            "val_images": len(splits.val_labels),
            "test_images": len(splits.test_labels),
            "image_shape": list(splits.image_shape),
            "num_classes": splits.num_classes,
        },
        "command": " ".join(sys.argv),
        "smoke": bool(args.smoke),
        "git_commit": commit or "unknown",
        "packages": {
            p: version(p)
            for p in ("tunelab", "ray", "torch", "torchvision", "optuna", "wandb", "numpy", "pandas", "pyarrow")
        },
        "hardware": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "ray_cluster_resources": {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")},
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "wall_s": round(time.time() - started, 1),
    }


def print_summary(outcome: dict[str, Any]) -> None:
    import pandas as pd

    trials: pd.DataFrame = outcome["trials"]
    metric = outcome["metric"]
    best_col = "val/acc_best" if metric in ("val/acc", "val/acc_best") else metric
    board = trials.sort_values(best_col, ascending=outcome["mode"] == "min").head(10)
    columns = ["trial_id", best_col, "epochs_run", "status", *outcome["searched_columns"]]
    if "test/acc" in board:
        columns.insert(2, "test/acc")
    shown = board[[c for c in columns if c in board]].rename(columns=lambda c: c.removeprefix("config."))
    counts = trials["status"].value_counts().to_dict()
    print()
    print(f"== {outcome['name']}: {len(trials)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())}) ==")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(shown.to_string(index=False))
    best = outcome.get("best_test")
    if best:
        print(
            f"\nBest trial {best['trial_id']}: {best_col} {best['val']:.4f}; "
            f"test/acc {best['test/acc']:.4f} (test set measured once, after the search, on "
            f"{best['test_images']:,} images)"
        )
    for kind in ("diverged", "oom", "error"):
        bad = trials[trials["status"] == kind]
        if len(bad):
            print(f"{kind}: {', '.join(bad['trial_id'])}")
    print(f"\nResults: {outcome['results_dir']}")
    for path in outcome["files"].values():
        print(f"  {path}")
    for line in outcome.get("notes", []):
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.list:
        print_presets()
        return 0
    if not args.space and not args.resume:
        parser.error("--space NAME is required (see --list)")
    if args.resume and not args.name:
        parser.error("--resume needs --name (the experiment to continue)")
    try:
        if args.resume and not args.space:
            args = _restore_args(args)
        preset = resolve_preset(args)
        if args.export_wandb_sweep:
            from search_spaces.wandb_sweep import export_sweep

            export_sweep(preset, args, args.export_wandb_sweep)
            print(f"wrote {args.export_wandb_sweep}; run it with: wandb sweep {args.export_wandb_sweep}")
            return 0
        if args.single_trial:
            return run_single_trial(preset, args)
        return run_search(preset, args)
    except KeyboardInterrupt:
        print("interrupted; resume with --resume --name <experiment>", file=sys.stderr)
        return 130
    except Exception as err:  # user-facing errors are one clear line; anything else is a bug
        if _is_user_error(err):
            print(f"tune.py: error: {err}", file=sys.stderr)
            return 2
        raise


def _restore_args(args: argparse.Namespace) -> argparse.Namespace:
    run_file = storage_locations(args, args.name)[1] / RUN_FILE
    if not run_file.is_file():
        raise ConfigError("--resume", "", f"no experiment to resume at {run_file.parent} (expected {RUN_FILE})")
    saved = json.loads(run_file.read_text())
    args.space, args.set = saved["space"], saved["set"]
    return args


def _is_user_error(err: Exception) -> bool:
    from trainables.data import DataFileError, MissingDataError, UnsafePickleError
    from trainables.recipe import CheckpointError
    from trainables.registry import UnknownNameError

    return isinstance(
        err,
        (
            ConfigError,
            DataFileError,
            MissingDataError,
            UnsafePickleError,
            UnknownNameError,
            CheckpointError,
            ConnectionError,
        ),
    )


if __name__ == "__main__":
    # Every trial checkpoints every epoch (exact resume); Ray warns that this forces frequent
    # experiment snapshots, which at our checkpoint sizes cost milliseconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
