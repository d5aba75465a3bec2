"""CIFAR-10 and CIFAR-100 from their python pickles, opened with the restricted unpickler."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from trainables.config import DataConfig
from trainables.data.idx import DataFileError
from trainables.data.registry import DATASETS, ensure_files
from trainables.data.safe_pickle import UnsafePickleError, safe_load
from trainables.data.splits import RawDataset


def _read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = safe_load(path)
    except UnsafePickleError:
        raise  # already names the file and the refused global
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
        # Truncated or foreign files fail inside the unpickler with any of these.
        raise DataFileError(f"{path}: not a readable CIFAR batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataFileError(f"{path}: expected a dict with keys b'data' and {label_key!r}, found {keys}")
    data = batch[b"data"]
    labels = np.asarray(batch[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataFileError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {shape}")
    if labels.shape != (len(data),):
        raise DataFileError(f"{path}: {len(data)} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFileError(f"{path}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _load(
    data_dir: Path,
    download: bool,
    folder: str,
    train_files: list[str],
    test_file: str,
    label_key: bytes,
    num_classes: int,
    torchvision_class: str,
) -> RawDataset:
    base = data_dir / folder

    def fetch(root: Path) -> None:
        import torchvision.datasets

        getattr(torchvision.datasets, torchvision_class)(str(root), train=True, download=True)

    ensure_files(
        data_dir,
        [base / f for f in [*train_files, test_file]],
        download,
        fetch,
        f"Extract the {folder} archive from the data set's home page into {data_dir}, or run once with network access.",
    )
    parts = [_read_batch(base / f, label_key, num_classes) for f in train_files]
    test_x, test_y = _read_batch(base / test_file, label_key, num_classes)
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return RawDataset(train_x, train_y, test_x, test_y, num_classes)


@DATASETS.register("cifar10")
def cifar10(config: DataConfig, data_dir: Path, download: bool = True) -> RawDataset:
    """32×32 colour images in 10 classes, 50,000 train / 10,000 test."""
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _load(data_dir, download, "cifar-10-batches-py", train, "test_batch", b"labels", 10, "CIFAR10")


@DATASETS.register("cifar100")
def cifar100(config: DataConfig, data_dir: Path, download: bool = True) -> RawDataset:
    """32×32 colour images in 100 fine classes, 50,000 train / 10,000 test."""
    return _load(data_dir, download, "cifar-100-python", ["train"], "test", b"fine_labels", 100, "CIFAR100")
