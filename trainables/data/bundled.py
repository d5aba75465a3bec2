"""Data sets that need no files: scikit-learn's bundled digits, and synthetic images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainables.config import DataConfig
from trainables.data.registry import DATASETS
from trainables.data.splits import RawDataset, stratified_split
from trainables.errors import ConfigError

# Digits has no official test split: a fixed, stratified 20% is held out as test.
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 12345


@DATASETS.register("digits")
def digits(config: DataConfig, data_dir: Path | None = None, download: bool = True) -> RawDataset:
    """scikit-learn's 1,797 handwritten digits, 8×8 grey (0..16 scaled to 0..255); no download."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED)
    return RawDataset(images[train], labels[train], images[test], labels[test], num_classes=10)


def synthetic_dataset(
    num_train: int = 2048,
    num_test: int = 512,
    shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    seed: int = 0,
) -> RawDataset:
    """Random uint8 images of ``shape``; a class brightens one channel (so the task is learnable)."""
    rng = np.random.default_rng(seed)
    total = num_train + num_test
    labels = rng.integers(0, num_classes, size=total)
    images = rng.integers(0, 160, size=(total, *shape), dtype=np.uint8)
    # 0..95 of extra brightness keeps every pixel below 256, so uint8 never wraps.
    shift = (labels * 95 // max(num_classes - 1, 1)).astype(np.uint8)
    images[np.arange(total), labels % shape[0]] += shift[:, None, None]
    return RawDataset(images[:num_train], labels[:num_train], images[num_train:], labels[num_train:], num_classes)


# Synthetic images live in the driver's memory and the Ray object store; larger is a typo.
SYNTHETIC_MAX_BYTES = 4 * 2**30


@DATASETS.register("synthetic")
def synthetic(config: DataConfig, data_dir: Path | None = None, download: bool = True) -> RawDataset:
    """Random images of the shape and class count in ``data.synthetic`` (benchmarks, smoke tests)."""
    spec = config.synthetic
    shape = (spec.channels, spec.image_size, spec.image_size)
    size = (spec.train_size + spec.test_size) * int(np.prod(shape))
    if size > SYNTHETIC_MAX_BYTES:
        raise ConfigError(
            "",
            "data.synthetic",
            f"{spec.train_size + spec.test_size:,} images of {shape} need {size / 2**30:.1f} GiB; "
            f"keep (train_size + test_size) × channels × image_size² under {SYNTHETIC_MAX_BYTES / 2**30:.0f} GiB",
        )
    return synthetic_dataset(spec.train_size, spec.test_size, shape, spec.num_classes, spec.seed)
