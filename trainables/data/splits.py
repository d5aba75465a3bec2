"""Train/validation/test splits and per-channel statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainables.config import DataConfig


@dataclass(frozen=True)
class RawDataset:
    """A data set's official train and test sets as uint8 (N, C, H, W) images and labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int


@dataclass(frozen=True)
class DataSplits:
    """What the driver holds: train and validation for trials, test for the final measurement.

    ``mean`` and ``std`` are per-channel statistics of the training split in [0, 1],
    used by ``normalize: dataset``.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    num_classes: int = 10
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    def without_test(self) -> DataSplits:
        """The same splits with the test set removed: what trials receive."""
        empty_x = self.test_images[:0]
        return DataSplits(
            self.name,
            self.train_images,
            self.train_labels,
            self.val_images,
            self.val_labels,
            empty_x,
            self.test_labels[:0],
            self.num_classes,
            self.mean,
            self.std,
        )


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class contributes ``val_fraction`` of its images to val."""
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) > 1 else 0
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    train = np.sort(np.concatenate(train_parts))
    val = np.sort(np.concatenate(val_parts))
    return train, val


def _limit(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, seeded subset of exactly ``min(limit, N)`` items.

    Each class gets its proportional share, rounded by largest remainder so the
    shares add up to ``limit`` exactly.
    """
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (limit / len(labels))
    shares = np.floor(exact).astype(int)
    leftover = limit - shares.sum()
    shares[np.argsort(-(exact - shares), kind="stable")[:leftover]] += 1
    keep = []
    for cls, share in zip(classes, shares):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        keep.append(idx[:share])
    return np.sort(np.concatenate(keep))


def load_dataset(config: DataConfig, data_dir: Path | None = None, download: bool = True) -> DataSplits:
    """Load ``config.name`` from ``data_dir`` and split off the validation set.

    The validation split is a stratified, seeded ``val_fraction`` of the official
    training set; the official test set is kept apart. ``train_limit`` keeps a
    stratified subset of exactly that many training images and caps validation
    at a quarter of it (at least one image per class), so smoke runs stay
    small; ``test_limit`` keeps a stratified subset of the test set.
    """
    from trainables.data.registry import DATASETS

    loader = DATASETS.get(config.name)
    root = Path(data_dir or "data").expanduser().resolve()
    raw: RawDataset = loader(config=config, data_dir=root, download=download)
    _check_raw(raw, config.name)
    train_idx, val_idx = stratified_split(raw.train_labels, config.val_fraction, config.split_seed)
    if config.train_limit is not None:
        train_idx = train_idx[_limit(raw.train_labels[train_idx], config.train_limit, config.split_seed)]
        val_cap = max(config.train_limit // 4, raw.num_classes)
        val_idx = val_idx[_limit(raw.train_labels[val_idx], val_cap, config.split_seed)]
    test_idx = _limit(raw.test_labels, config.test_limit, config.split_seed)
    train_x = np.ascontiguousarray(raw.train_images[train_idx])
    scaled = train_x.astype(np.float32) / 255.0
    mean = tuple(float(m) for m in scaled.mean(axis=(0, 2, 3)))
    std = tuple(float(max(s, 1e-3)) for s in scaled.std(axis=(0, 2, 3)))
    return DataSplits(
        name=config.name,
        train_images=train_x,
        train_labels=raw.train_labels[train_idx],
        val_images=np.ascontiguousarray(raw.train_images[val_idx]),
        val_labels=raw.train_labels[val_idx],
        test_images=np.ascontiguousarray(raw.test_images[test_idx]),
        test_labels=raw.test_labels[test_idx],
        num_classes=raw.num_classes,
        mean=mean,
        std=std,
    )


def _check_raw(raw: RawDataset, name: str) -> None:
    """A loader's contract: uint8 (N, C, H, W) images, matching int labels in range, same image shape."""
    for part in ("train", "test"):
        images, labels = getattr(raw, f"{part}_images"), getattr(raw, f"{part}_labels")
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
            raise ValueError(
                f"data set {name!r}: {part} images must be non-empty uint8 (N, C, H, W), got "
                f"{images.dtype} {images.shape}"
            )
        if labels.shape != (len(images),) or labels.min() < 0 or labels.max() >= raw.num_classes:
            raise ValueError(
                f"data set {name!r}: {part} labels must be {len(images)} integers in 0..{raw.num_classes - 1}"
            )
    if raw.train_images.shape[1:] != raw.test_images.shape[1:]:
        raise ValueError(
            f"data set {name!r}: train images {raw.train_images.shape[1:]} and test images "
            f"{raw.test_images.shape[1:]} differ in shape"
        )
