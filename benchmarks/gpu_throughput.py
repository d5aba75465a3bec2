"""GPU training throughput and model FLOP utilisation, and trials packed on one GPU (CUDA only).

    python -m benchmarks.gpu_throughput                     # ResNet18/50 ablations + packing 1/2/4 trials
    python -m benchmarks.gpu_throughput --smoke --json out.json
    python -m benchmarks.gpu_throughput --cpu --models small_cnn --smoke   # checks the script itself on CPU

Without CUDA it prints that it was skipped and exits 0 (``--cpu`` runs the
single-trial table on the CPU instead, to exercise the code; its figures mean
nothing for GPUs).

1. Single trial: ``TrialRun`` on CIFAR-shaped uint8 data resident on the GPU,
   for CIFAR ResNet18 and ResNet50, with bf16 autocast, channels-last and
   ``torch.compile`` all on, each one turned off in turn, and all off. One
   warm-up epoch (compilation, cuDNN autotuning), then timed epochs.
   MFU = images/s × 3 × forward FLOPs per image (``forward_flops``; ×3 for
   forward + backward) ÷ the device's dense bf16 peak from ``PEAK_BF16``.
2. Packing: 1, 2 and 4 Ray Tune trials of the same small model on one GPU,
   each reserving 1/k GPU and capped to 1/k of its memory
   (``TrialRun(gpu_memory_fraction=1/k)`` → ``torch.cuda.set_per_process_memory_fraction``).
   Aggregate images/s = sum over trials of their median epoch throughput.
3. Memory isolation: two Ray tasks with 0.5 GPU each; one allocates past its
   half and must get ``torch.OutOfMemoryError`` while its neighbour, holding
   40% of the GPU, keeps working.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.report import machine, print_table, write_json

# Dense bf16 tensor-core peak FLOP/s by device name (first substring match wins: specific names first).
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("RTX 4090", 165e12),
)

# (label, bf16, channels_last, compile)
VARIANTS = (
    ("all on", "on", "on", True),
    ("no compile", "on", "on", False),
    ("no channels-last", "on", "off", True),
    ("no bf16", "off", "on", True),
    ("all off", "off", "off", False),
)


def peak_flops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16 if key in device_name), None)


def single_trial(model: str, variant: tuple, splits: Any, batch_size: int, epochs: int, device: str) -> dict[str, Any]:
    from trainables.config import AugmentConfig, DataConfig, ModelConfig, OptimizerConfig, TrainConfig
    from trainables.recipe import TrialRun

    label, bf16, channels_last, compiled = variant
    config = TrainConfig(
        data=DataConfig(name="synthetic", augment=AugmentConfig(crop_padding=4, flip=True)),
        model=ModelConfig(model, {}),
        optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
        epochs=epochs + 1,
        batch_size=batch_size,
        bf16=bf16,
        channels_last=channels_last,
        compile=compiled,
    )
    run = TrialRun(config, splits, device=device)
    run.run_epoch()  # warm-up: compilation, cuDNN autotuning, allocator growth
    throughputs = [run.run_epoch()["throughput/img_s"] for _ in range(epochs)]
    images_per_s = statistics.median(throughputs)
    flops_per_image = 3 * run.flops  # forward + backward ≈ 3 forward passes
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        peak = peak_flops(name)
        memory_gib = torch.cuda.max_memory_allocated(torch.device(device)) / 2**30
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    else:
        peak, memory_gib = None, 0.0
    del run
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "model": model,
        "variant": label,
        "bf16": bf16 == "on",
        "channels_last": channels_last == "on",
        "compile": compiled,
        "batch_size": batch_size,
        "images_per_s": images_per_s,
        "train_tflops": images_per_s * flops_per_image / 1e12,
        "mfu": images_per_s * flops_per_image / peak if peak else float("nan"),
        "peak_memory_gib": memory_gib,
    }


def packed_trials(k: int, model: str, splits: Any, batch_size: int, epochs: int, storage: Path) -> dict[str, Any]:
    """k Tune trials with 1/k GPU each; aggregate = sum of their median epoch throughput."""
    from ray import tune

    from trainables.adapter import train_trial
    from trainables.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig

    fraction = 1.0 / k
    config = TrainConfig(
        data=DataConfig(name="synthetic", augment=AugmentConfig(crop_padding=4, flip=True)),
        model=ModelConfig(model, {}),
        epochs=epochs,
        batch_size=batch_size,
    ).to_flat()
    config["seed"] = tune.grid_search(list(range(k)))  # k distinct trials of the same recipe
    cpus = max(1.0, (os.cpu_count() or 1) // k)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=splits, gpu_fraction=fraction), {"cpu": cpus, "gpu": fraction}
    )
    tuner = tune.Tuner(
        trainable,
        param_space=config,
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=k),
        run_config=tune.RunConfig(name=f"pack{k}", storage_path=str(storage), verbose=0),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    per_trial, statuses = [], []
    for result in grid:
        history = result.metrics_dataframe
        statuses.append("error" if result.error else str((result.metrics or {}).get("status")))
        steady = history["throughput/img_s"].iloc[1:] if len(history) > 1 else history["throughput/img_s"]
        per_trial.append(float(steady.median()))
    return {
        "trials": k,
        "gpu_fraction": fraction,
        "model": model,
        "per_trial_images_per_s": per_trial,
        "aggregate_images_per_s": sum(per_trial),
        "statuses": statuses,
        "wall_s": wall,
    }


def memory_isolation() -> dict[str, Any]:
    """One half-GPU task over-allocates and must OOM alone; its neighbour's 40% allocation survives."""
    import ray

    @ray.remote(num_gpus=0.5, num_cpus=0)
    def hold(fraction_of_gpu: float, seconds: float) -> str:
        import torch

        torch.cuda.set_per_process_memory_fraction(0.5)
        total = torch.cuda.get_device_properties(0).total_memory
        try:
            block = torch.empty(int(total * fraction_of_gpu), dtype=torch.uint8, device="cuda")
            block.fill_(1)
            time.sleep(seconds)
            ok = bool(block[-1].item() == 1)
            return "ok" if ok else "corrupted"
        except torch.OutOfMemoryError:
            return "oom"

    neighbour = hold.remote(0.40, 8.0)
    time.sleep(2.0)
    grower = hold.remote(0.60, 0.0)
    grower_status, neighbour_status = ray.get([grower, neighbour])
    return {
        "grower_0.6_of_gpu": grower_status,
        "neighbour_0.4_of_gpu": neighbour_status,
        "isolated": grower_status == "oom" and neighbour_status == "ok",
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.harness_overhead import make_splits

    device = "cpu" if args.cpu else "cuda"
    splits = make_splits(args.train_images, args.val_images)
    variants = [v for v in VARIANTS if not (args.cpu and v[3])]  # no compile on the CPU check: minutes of build
    if args.smoke:
        variants = [v for v in variants if v[0] in ("no compile", "all off")]
    rows = [single_trial(m, v, splits, args.batch_size, args.epochs, device) for m in args.models for v in variants]
    result: dict[str, Any] = {
        "benchmark": "gpu_throughput",
        "skipped": False,
        "device": device,
        "rows": rows,
        "machine": machine(),
    }
    if device == "cuda":
        result["device_name"] = torch.cuda.get_device_name(0)
        result["peak_bf16_flops"] = peak_flops(result["device_name"])
    if not args.cpu:
        import ray

        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(
                address="local",
                num_cpus=os.cpu_count(),
                num_gpus=torch.cuda.device_count(),
                include_dashboard=False,
                log_to_driver=False,
            )
        try:
            with tempfile.TemporaryDirectory(prefix="gpu-packing-") as storage:
                packing = [
                    packed_trials(k, args.pack_model, splits, args.pack_batch_size, args.pack_epochs, Path(storage))
                    for k in args.pack
                ]
            base = packing[0]["aggregate_images_per_s"]
            for row in packing:
                row["ratio_vs_one_trial"] = row["aggregate_images_per_s"] / base
            result["packing"] = packing
            result["memory_isolation"] = memory_isolation()
        finally:
            if started_ray:
                ray.shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="two variants, few images, packing 1 and 2 trials")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--cpu", action="store_true", help="run the single-trial table on the CPU (checks the script)")
    parser.add_argument("--models", nargs="+", default=["cifar_resnet18", "cifar_resnet50"])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--train-images", type=int, default=50_000)
    parser.add_argument("--val-images", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up epoch")
    parser.add_argument("--pack", type=int, nargs="+", default=[1, 2, 4], help="trials packed on one GPU")
    parser.add_argument("--pack-model", default="cifar_resnet18")
    parser.add_argument("--pack-batch-size", type=int, default=256)
    parser.add_argument("--pack-epochs", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_throughput: skipped: no CUDA device on this machine (figures need a GPU)")
        write_json(
            args.json,
            {"benchmark": "gpu_throughput", "skipped": True, "reason": "no CUDA device", "machine": machine()},
        )
        return 0
    if args.smoke:
        args.models = args.models[:1]
        args.train_images, args.val_images, args.epochs = 2048, 256, 1
        args.pack, args.pack_epochs = [1, 2], 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    result = run(args)
    print_table(
        result["rows"],
        ["model", "variant", "batch_size", "images_per_s", "train_tflops", "mfu", "peak_memory_gib"],
        f"single-trial training throughput on {result.get('device_name', result['device'])}",
    )
    if "packing" in result:
        print_table(
            result["packing"],
            ["trials", "gpu_fraction", "aggregate_images_per_s", "ratio_vs_one_trial", "wall_s"],
            f"{args.pack_model} trials packed on one GPU",
        )
        print(f"memory isolation: {result['memory_isolation']}")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
