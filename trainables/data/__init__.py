"""Data sets: a registry of loaders, and the split that trials train on.

    from trainables.data import load_dataset
    splits = load_dataset(DataConfig(name="mnist"), data_dir=Path("../shared/data"))

Every loader returns uint8 images (N, C, H, W) and int64 labels for the official
train and test sets. ``load_dataset`` then holds out a stratified, seeded
validation split from the training set; trials see train and validation only,
the test set stays with the driver for the one final measurement.
"""

from __future__ import annotations

# Importing the loader modules fills the registry.
from trainables.data import bundled, cifar, mnist  # noqa: E402,F401
from trainables.data.idx import DataFileError
from trainables.data.registry import DATASETS, MissingDataError
from trainables.data.safe_pickle import UnsafePickleError
from trainables.data.splits import DataSplits, RawDataset, load_dataset, stratified_split

__all__ = [
    "DATASETS",
    "DataFileError",
    "DataSplits",
    "MissingDataError",
    "RawDataset",
    "UnsafePickleError",
    "load_dataset",
    "stratified_split",
]
