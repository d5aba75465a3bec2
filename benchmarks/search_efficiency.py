"""Search efficiency: best validation accuracy against epochs consumed, TPE + ASHA vs random search.

    python -m benchmarks.search_efficiency                                  # digits, 5 seeds, 3 strategies
    python -m benchmarks.search_efficiency --cases digits mnist --data-dir ../shared/data
    python -m benchmarks.search_efficiency --smoke --json out.json

Every search runs through ``tune.main`` in this process (one local Ray for all of
them), exactly as ``python tune.py --space … --searcher … --scheduler … --seed …``
would, and the curves are computed from the results store it writes
(``trials.parquet``, ``epochs.parquet``) — never from Ray's internals.

Strategies: Optuna TPE + ASHA (the platform's default), random search + FIFO
(every trial runs all epochs; the baseline), Optuna TPE + FIFO (isolates the
searcher from the scheduler). Per seed, a strategy's curve is the best
``val/acc`` seen so far against cumulative epochs, counting trials in the order
they were created (trial-id order; at concurrency 2 this is completion order up
to neighbouring swaps) and each trial's epochs in order. Epoch counts do not
depend on the hardware, so the figures are robust to a busy CPU.

The target per seed is random search's final best validation accuracy; the
benchmark reports the epochs each strategy needs to reach it (median over seeds,
``inf`` where a seed never reaches it), and the ratio to random search's own
epochs-to-target (the epoch at which it first reached its final best — the
baseline's most favourable reading) and to its full budget.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.report import machine, print_table, write_json


@dataclass(frozen=True)
class Strategy:
    name: str
    searcher: str
    scheduler: str


STRATEGIES = (
    Strategy("tpe+asha", "optuna", "asha"),
    Strategy("random+fifo", "random", "fifo"),
    Strategy("tpe+fifo", "optuna", "fifo"),
)
BASELINE = "random+fifo"
CANDIDATE = "tpe+asha"


@dataclass(frozen=True)
class Case:
    """One search problem: a preset plus overrides, and its budget (trials × max epochs)."""

    space: str
    num_samples: int
    max_epochs: int
    overrides: tuple[str, ...] = ()
    needs_data_dir: bool = False
    notes: str = ""
    smoke_overrides: tuple[str, ...] = field(default=("tune.scheduler.grace_period_epochs=1",))


CASES = {
    # The quickstart's own search: small CNN on 8×8 digits, its space, 24 trials × 12 epochs.
    "digits": Case("quickstart", 24, 12, notes="search_spaces/quickstart.yaml as shipped"),
    # Real MNIST (the subset in ../shared/data), the quickstart's model and space, a smaller budget.
    "mnist": Case(
        "quickstart",
        12,
        6,
        overrides=("data.name=mnist", "data.train_limit=2000", "data.val_fraction=0.1"),
        needs_data_dir=True,
        notes="quickstart space on 2,000 real MNIST training images (stratified subset), 500 validation",
    ),
}


def run_search(
    case: Case,
    strategy: Strategy,
    seed: int,
    storage: Path,
    data_dir: Path | None,
    num_samples: int,
    max_epochs: int,
    extra: tuple[str, ...],
) -> Path:
    """One ``tune.main`` search; returns the experiment folder (its results store)."""
    import tune

    name = f"{Path(case.space).stem}-{strategy.name.replace('+', '-')}-seed{seed}"
    argv = [
        "--space",
        case.space,
        "--storage-path",
        str(storage),
        "--name",
        name,
        "--quiet",
        "--searcher",
        strategy.searcher,
        "--scheduler",
        strategy.scheduler,
        "--seed",
        str(seed),
        "--num-samples",
        str(num_samples),
        "--max-epochs",
        str(max_epochs),
        "--set",
        "tune.top_k_test=0",  # selection efficiency only: the test set is not needed here
    ]
    for item in (*case.overrides, *extra):
        argv += ["--set", item]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir), "--no-download"]
    with contextlib.redirect_stdout(io.StringIO()):  # tune.main prints a leaderboard per search
        code = tune.main(argv)
    if code != 0:
        raise RuntimeError(f"search {name} failed with exit code {code}")
    return storage / name


def trial_order_key(trial_id: str) -> tuple[int, str]:
    """Ray trial ids end in a creation counter (``ab12c_00007``)."""
    suffix = trial_id.rsplit("_", 1)[-1]
    return (int(suffix), trial_id) if suffix.isdigit() else (math.inf, trial_id)  # type: ignore[return-value]


def best_so_far_curve(experiment_dir: Path, metric: str = "val/acc") -> list[tuple[int, float]]:
    """(cumulative epochs, best ``metric`` so far) after every epoch of every trial, trials in creation order."""
    from analysis.results import load_experiment

    exp = load_experiment(experiment_dir)
    epochs = exp.epochs
    if metric not in epochs or not len(epochs):
        raise RuntimeError(f"{experiment_dir}: the search recorded no epochs with {metric}")
    healthy = epochs[epochs["status"].isin(["running", "completed"])] if "status" in epochs else epochs
    curve, used, best = [], 0, 0.0
    for trial_id in sorted(exp.trials["trial_id"], key=trial_order_key):
        rows = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
        good = set(healthy[healthy["trial_id"] == trial_id]["epoch"])
        for epoch, value in zip(rows["epoch"], rows[metric], strict=True):
            used += 1
            if epoch in good and math.isfinite(value):
                best = max(best, float(value))
            curve.append((used, best))
    return curve


def epochs_to_reach(curve: list[tuple[int, float]], target: float) -> float:
    return next((float(used) for used, best in curve if best >= target), math.inf)


def best_at(curve: list[tuple[int, float]], budget: int) -> float:
    reached = [best for used, best in curve if used <= budget]
    return reached[-1] if reached else 0.0


def summarise(case_name: str, curves: dict[str, dict[int, list[tuple[int, float]]]], budget: int) -> dict[str, Any]:
    seeds = sorted(curves[BASELINE])
    targets = {s: curves[BASELINE][s][-1][1] for s in seeds}
    rows = []
    for strategy, by_seed in curves.items():
        to_target = [epochs_to_reach(by_seed[s], targets[s]) for s in seeds]
        rows.append(
            {
                "case": case_name,
                "strategy": strategy,
                "seeds": len(seeds),
                "final_best_median": statistics.median(by_seed[s][-1][1] for s in seeds),
                "epochs_used_median": statistics.median(by_seed[s][-1][0] for s in seeds),
                "epochs_to_target_median": statistics.median(to_target),
                "seeds_reaching_target": sum(math.isfinite(v) for v in to_target),
                "epochs_to_target": to_target,
            }
        )
    by_name = {r["strategy"]: r for r in rows}
    random_to_target = by_name[BASELINE]["epochs_to_target_median"]
    random_budget = by_name[BASELINE]["epochs_used_median"]
    for row in rows:
        row["ratio_vs_random_to_target"] = row["epochs_to_target_median"] / random_to_target
        row["ratio_vs_random_budget"] = row["epochs_to_target_median"] / random_budget
    checkpoints = sorted({max(1, round(budget * f)) for f in (0.05, 0.1, 0.25, 0.5, 1.0)})
    at_budget = [
        {
            "case": case_name,
            "strategy": strategy,
            **{f"best@{b}": statistics.median(best_at(by_seed[s], b) for s in seeds) for b in checkpoints},
        }
        for strategy, by_seed in curves.items()
    ]
    return {
        "case": case_name,
        "targets": {str(s): targets[s] for s in seeds},
        "rows": rows,
        "best_at_budget": at_budget,
        "budget_checkpoints": checkpoints,
        "candidate_ratio_vs_random_to_target": by_name[CANDIDATE]["ratio_vs_random_to_target"],
        "candidate_ratio_vs_random_budget": by_name[CANDIDATE]["ratio_vs_random_budget"],
        "curves": {k: {str(s): v for s, v in by_seed.items()} for k, by_seed in curves.items()},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", num_cpus=args.num_cpus, num_gpus=0, include_dashboard=False, log_to_driver=False)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="search-efficiency-") as tmp:
            storage = Path(args.storage_path or tmp).resolve()
            for case_name in args.cases:
                case = CASES[case_name]
                num_samples = args.num_samples or case.num_samples
                max_epochs = args.max_epochs or case.max_epochs
                extra = (*(case.smoke_overrides if args.smoke else ()), *args.set)
                curves: dict[str, dict[int, list]] = {s.name: {} for s in STRATEGIES}
                for seed in range(args.seeds):
                    for strategy in STRATEGIES:
                        exp_dir = run_search(
                            case,
                            strategy,
                            seed,
                            storage / case_name,
                            args.data_dir if case.needs_data_dir else None,
                            num_samples,
                            max_epochs,
                            extra,
                        )
                        curves[strategy.name][seed] = best_so_far_curve(exp_dir)
                        print(
                            f"{case_name} seed {seed} {strategy.name}: best {curves[strategy.name][seed][-1][1]:.4f} "
                            f"after {curves[strategy.name][seed][-1][0]} epochs",
                            flush=True,
                        )
                    summary = summarise(case_name, {k: v for k, v in curves.items() if v}, num_samples * max_epochs)
                    summary.update(
                        {
                            "space": case.space,
                            "overrides": [*case.overrides, *extra],
                            "notes": case.notes,
                            "num_samples": num_samples,
                            "max_epochs": max_epochs,
                        }
                    )
                    # Written after every seed, so a long run that is stopped still leaves its figures.
                    write_json(args.json, _payload(args, [*results, summary]))
                results.append(summary)
    finally:
        if started_ray:
            ray.shutdown()
    return _payload(args, results)


def _payload(args: argparse.Namespace, cases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "benchmark": "search_efficiency",
        "seeds": args.seeds,
        "strategies": [s.__dict__ for s in STRATEGIES],
        "cases": cases,
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="digits, 1 seed, 3 trials x 3 epochs per strategy")
    parser.add_argument("--json", metavar="FILE", help="also write the results (with every curve) as JSON")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), help="default: digits, plus mnist with --data-dir")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--num-samples", type=int, help="trials per search (default: the case's)")
    parser.add_argument("--max-epochs", type=int, help="epochs per trial (default: the case's)")
    parser.add_argument("--data-dir", type=Path, help="data sets in torchvision's layout (real MNIST: ../shared/data)")
    parser.add_argument("--storage-path", help="keep the experiments here (default: a temporary folder)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra preset override for every search, e.g. tune.scheduler.grace_period_epochs=1",
    )
    args = parser.parse_args(argv)
    if args.cases is None:
        args.cases = ["digits"] + (["mnist"] if args.data_dir and not args.smoke else [])
    missing = [c for c in args.cases if CASES[c].needs_data_dir and args.data_dir is None]
    if missing:
        parser.error(f"cases {', '.join(missing)} need --data-dir (real MNIST lives in ../shared/data)")
    if args.smoke:
        args.seeds, args.num_samples, args.max_epochs = 1, args.num_samples or 3, args.max_epochs or 3
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    result = run(args)
    for case in result["cases"]:
        print_table(
            case["rows"],
            [
                "strategy",
                "seeds",
                "final_best_median",
                "epochs_used_median",
                "epochs_to_target_median",
                "seeds_reaching_target",
                "ratio_vs_random_to_target",
                "ratio_vs_random_budget",
            ],
            f"{case['case']}: {case['num_samples']} trials x {case['max_epochs']} epochs; target = random search's "
            "final best val/acc (per seed)",
        )
        columns = ["strategy", *[f"best@{b}" for b in case["budget_checkpoints"]]]
        print_table(case["best_at_budget"], columns, f"{case['case']}: median best val/acc within N epochs")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
