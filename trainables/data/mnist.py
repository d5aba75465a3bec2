"""MNIST and Fashion-MNIST from torchvision's on-disk layout: ``<data_dir>/<Name>/raw/*-ubyte[.gz]``."""

from __future__ import annotations

from pathlib import Path

from trainables.config import DataConfig
from trainables.data.idx import DataFileError, read_idx_pair
from trainables.data.registry import DATASETS, ensure_files
from trainables.data.splits import RawDataset

_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find(raw_dir: Path, stem: str) -> Path:
    """Prefer the uncompressed file when both exist (torchvision extracts next to the .gz)."""
    plain = raw_dir / stem
    return plain if plain.exists() else raw_dir / f"{stem}.gz"


def _load_idx_dataset(folder: str, torchvision_class: str, data_dir: Path, download: bool) -> RawDataset:
    raw_dir = data_dir / folder / "raw"

    def fetch(root: Path) -> None:
        import torchvision.datasets

        for train in (True, False):
            getattr(torchvision.datasets, torchvision_class)(str(root), train=train, download=True)

    ensure_files(
        data_dir,
        [raw_dir / stem for stem in _STEMS],
        download,
        fetch,
        f"Put the four {folder} IDX files (.gz or extracted) in {raw_dir}, or run once with network access.",
        present=lambda path: _find(path.parent, path.name).exists(),
    )
    train_x, train_y = read_idx_pair(_find(raw_dir, _STEMS[0]), _find(raw_dir, _STEMS[1]))
    test_x, test_y = read_idx_pair(_find(raw_dir, _STEMS[2]), _find(raw_dir, _STEMS[3]))
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataFileError(
            f"{_find(raw_dir, _STEMS[0])} holds {train_x.shape[2]}×{train_x.shape[3]} images but "
            f"{_find(raw_dir, _STEMS[2])} holds {test_x.shape[2]}×{test_x.shape[3]}; both must come from {folder}"
        )
    return RawDataset(train_x, train_y, test_x, test_y, num_classes=10)


@DATASETS.register("mnist")
def mnist(config: DataConfig, data_dir: Path, download: bool = True) -> RawDataset:
    """Handwritten digits, 28×28 grey, 60,000 train / 10,000 test (any valid subset accepted)."""
    return _load_idx_dataset("MNIST", "MNIST", data_dir, download)


@DATASETS.register("fashion_mnist")
def fashion_mnist(config: DataConfig, data_dir: Path, download: bool = True) -> RawDataset:
    """Zalando clothing images, 28×28 grey, 60,000 train / 10,000 test."""
    return _load_idx_dataset("FashionMNIST", "FashionMNIST", data_dir, download)
