"""Images/s of tunelab's batched augmentation against torchvision's DataLoader + PIL transforms.

    python -m benchmarks.input_pipeline                      # 20,000 CIFAR-shaped images, workers 0/1/2
    python -m benchmarks.input_pipeline --smoke --json out.json

Both sides produce the same training batches from the same uint8 CIFAR-shaped
data: random crop with 4 pixels of zero padding, random horizontal flip,
normalisation with CIFAR-10's mean/std, batch size 128, a fresh shuffle per
epoch. tunelab indexes a device-resident uint8 tensor with ``batch_indices`` and
augments the whole batch in ``BatchPipeline``; the baseline is the common
torchvision recipe (HWC uint8 → ``PIL.Image.fromarray`` as torchvision's CIFAR10
does → RandomCrop(32, padding=4) → RandomHorizontalFlip → ToTensor → Normalize)
in a ``DataLoader`` at its best worker count. Workers are persistent and warmed
up before timing, which is the baseline's best case. On CUDA both sides end
with the batch on the GPU (the baseline copies from pinned memory).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

from benchmarks.report import machine, print_table, write_json

TUNELAB = "tunelab BatchPipeline"
BASELINE = "torchvision DataLoader + PIL"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def make_data(num_images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_images, 3, 32, 32), dtype=np.uint8)
    return images, rng.integers(0, 10, size=num_images).astype(np.int64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tunelab_epoch_s(images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> float:
    """Seconds for one epoch of tunelab's pipeline over device-resident uint8 images."""
    from trainables.config import AugmentConfig, DataConfig
    from trainables.pipeline import BatchPipeline, batch_indices

    config = DataConfig(normalize="dataset", augment=AugmentConfig(crop_padding=4, flip=True))
    pipeline = BatchPipeline(config, CIFAR10_MEAN, CIFAR10_STD, 3, images.device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    _sync(images.device)
    start = time.perf_counter()
    for idx in batch_indices(len(labels), batch_size, generator, images.device, shuffle=True):
        batch = pipeline(images[idx], train=True, generator=generator)
        targets = labels[idx]
    _sync(images.device)
    elapsed = time.perf_counter() - start
    assert batch.dtype == torch.float32 and batch.shape[1:] == (3, 32, 32) and len(targets) == len(batch)
    return elapsed


class PILImages(torch.utils.data.Dataset):
    """uint8 HWC images served as PIL images through transforms, as torchvision's CIFAR10 does."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform: Any) -> None:
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def torchvision_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int, device: torch.device):
    from torchvision import transforms as T

    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    dataset = PILImages(np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels, transform)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )


def loader_epoch_s(loader: Any, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for batch, targets in loader:
        batch = batch.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
    _sync(device)
    return time.perf_counter() - start


def run(num_images: int, batch_size: int, workers: list[int], repeats: int, device: torch.device) -> dict[str, Any]:
    images, labels = make_data(num_images)
    rows = []
    x, y = torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)
    default_threads = torch.get_num_threads()
    # A trial runs with as many intra-op threads as CPUs it reserves (Ray sets OMP_NUM_THREADS), so both counts are shown.
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        try:
            tunelab_epoch_s(x[: 4 * batch_size], y[: 4 * batch_size], batch_size, seed=0)  # warm-up
            times = [tunelab_epoch_s(x, y, batch_size, seed=r + 1) for r in range(repeats)]
        finally:
            torch.set_num_threads(default_threads)
        rows.append(
            {"method": TUNELAB, "workers": 0, "threads": threads, "images_per_s": num_images / statistics.median(times)}
        )
    for w in workers:
        loader = torchvision_loader(images, labels, batch_size, w, device)
        loader_epoch_s(loader, device)  # warm-up epoch: starts the persistent workers
        times = [loader_epoch_s(loader, device) for _ in range(max(1, repeats - 1))]
        threads = default_threads if w == 0 else 1  # DataLoader workers run single-threaded torch
        rows.append(
            {
                "method": BASELINE,
                "workers": w,
                "threads": threads,
                "images_per_s": num_images / statistics.median(times),
            }
        )
        del loader
    best = max((r for r in rows if r["method"] == BASELINE), key=lambda r: r["images_per_s"])
    ours = max((r for r in rows if r["method"] == TUNELAB), key=lambda r: r["images_per_s"])
    for row in rows:
        row["ratio_vs_best_baseline"] = row["images_per_s"] / best["images_per_s"]
    return {
        "benchmark": "input_pipeline",
        "device": str(device),
        "num_images": num_images,
        "batch_size": batch_size,
        "rows": rows,
        "best_baseline_workers": best["workers"],
        "best_tunelab_threads": ours["threads"],
        "speedup": ours["images_per_s"] / best["images_per_s"],
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1,024 images, workers 0 and 1: a few seconds")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--images", type=int, default=20_000, help="images per epoch (default 20,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts to try")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per method; the median counts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.workers, args.repeats = 1024, [0, 1], 2
    result = run(args.images, args.batch_size, args.workers, args.repeats, torch.device(args.device))
    print_table(
        result["rows"],
        ["method", "workers", "threads", "images_per_s", "ratio_vs_best_baseline"],
        f"input pipeline on {result['device']}: {result['num_images']:,} CIFAR-shaped images, batch {result['batch_size']}",
    )
    print(
        f"speedup of tunelab ({result['best_tunelab_threads']} threads) over the best DataLoader "
        f"({result['best_baseline_workers']} workers): {result['speedup']:.1f}x"
    )
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
