"""Shared fixtures: one Ray session for the whole run, real MNIST when present, CIFAR-format files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance with 2 CPUs shared by every test that searches."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST subset in torchvision's layout (../shared/data/MNIST/raw)."""
    if not (SHARED_DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {SHARED_DATA}/MNIST/raw (only present beside the project's CI checkout)")
    return SHARED_DATA


def write_cifar10(root: Path, per_batch: int = 40, test: int = 40, seed: int = 0) -> Path:
    """Write CIFAR-10 in its exact on-disk format (pickled dicts, uint8 (N, 3072)), learnable classes."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int) -> dict:
        labels = rng.integers(0, 10, size=n)
        images = rng.integers(0, 120, size=(n, 3, 32, 32), dtype=np.uint8)
        images[np.arange(n), labels % 3] += (labels * 13).astype(np.uint8)[:, None, None]
        return {
            b"batch_label": b"synthetic",
            b"labels": labels.tolist(),
            b"data": images.reshape(n, 3072),
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_batch)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(test)))
    meta = {b"label_names": [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


def write_cifar100(root: Path, train: int = 200, test: int = 50, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        data = {
            b"fine_labels": rng.integers(0, 100, size=n).tolist(),
            b"coarse_labels": [0] * n,
            b"data": rng.integers(0, 255, size=(n, 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(pickle.dumps(data))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"x"] * 100}))
    return root


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write an unsigned-byte IDX file (optionally .gz) like the MNIST originals."""
    import gzip
    import struct

    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_fashion_mnist(root: Path, train: int = 300, test: int = 100, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    raw = root / "FashionMNIST" / "raw"
    for prefix, n in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, size=n)
        images = rng.integers(0, 100, size=(n, 28, 28)).astype(np.uint8)
        images[:, :, :] += (labels * 15).astype(np.uint8)[:, None, None]
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="session")
def all_data_dir(tmp_path_factory) -> Path:
    """A data folder with every file-based data set: real MNIST when present, generated CIFAR/Fashion files."""
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root)
    write_cifar100(root)
    write_fashion_mnist(root)
    mnist = SHARED_DATA / "MNIST"
    if mnist.is_dir():
        (root / "MNIST").symlink_to(mnist)
    else:  # a user's clone without ../shared: small generated MNIST-format files
        rng = np.random.default_rng(1)
        for prefix, n in (("train", 300), ("t10k", 100)):
            labels = rng.integers(0, 10, size=n)
            write_idx(
                root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte.gz",
                (rng.integers(0, 100, size=(n, 28, 28)) + labels[:, None, None] * 15).astype(np.uint8),
            )
            write_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root
