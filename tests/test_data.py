"""Data sets: registry, real MNIST, structural file validation, safe CIFAR pickles, downloads, splits.

.venv/bin/python -m pytest tests/test_data.py -q
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_cifar10, write_cifar100, write_fashion_mnist, write_idx
from trainables.config import DataConfig, SyntheticConfig, TrainConfig
from trainables.data import (
    DATASETS,
    DataFileError,
    MissingDataError,
    UnsafePickleError,
    load_dataset,
    stratified_split,
)
from trainables.data.idx import read_idx, read_idx_pair
from trainables.data.registry import ensure_files
from trainables.data.safe_pickle import safe_load
from trainables.errors import ConfigError

# torchvision's MD5 of the official 60,000-image training file; the shared subset differs.
OFFICIAL_TRAIN_IMAGES_MD5 = "f68b3c2dcbeaaa9fbdd348bbdeb94873"


def test_registry_holds_every_data_set():
    assert set(DATASETS.names()) == {"mnist", "fashion_mnist", "cifar10", "cifar100", "digits", "synthetic"}


def test_unknown_data_set_is_a_config_error_with_closest_names():
    with pytest.raises(ConfigError, match=r"base\.data\.name: unknown data set 'cifar_10'; closest: cifar10"):
        TrainConfig.from_dict({"data": {"name": "cifar_10"}}, source="p.yaml")


# ------------------------------------------------------------------------------ real MNIST


def test_real_mnist_subset_loads_although_its_md5_differs(mnist_dir):
    train_file = mnist_dir / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    assert hashlib.md5(train_file.read_bytes()).hexdigest() != OFFICIAL_TRAIN_IMAGES_MD5
    splits = load_dataset(DataConfig(name="mnist", val_fraction=0.1), mnist_dir, download=False)
    assert len(splits.train_labels) + len(splits.val_labels) == 23_797
    assert len(splits.test_labels) == 10_000
    assert splits.train_images.shape[1:] == (1, 28, 28) and splits.train_images.dtype == np.uint8
    assert splits.test_images.shape == (10_000, 1, 28, 28)
    assert abs(len(splits.val_labels) - 2_380) <= 10
    assert set(np.unique(splits.test_labels)) == set(range(10))
    # MNIST's well-known pixel statistics (0.1307, 0.3081 on the full set).
    assert splits.mean[0] == pytest.approx(0.1307, abs=0.005)
    assert splits.std[0] == pytest.approx(0.3081, abs=0.005)


# ------------------------------------------------------------------- every data set loads


def test_file_data_sets_load_from_torchvision_layout(all_data_dir):
    for name, classes, shape in (
        ("cifar10", 10, (3, 32, 32)),
        ("cifar100", 100, (3, 32, 32)),
        ("fashion_mnist", 10, (1, 28, 28)),
        ("mnist", 10, (1, 28, 28)),
    ):
        splits = load_dataset(DataConfig(name=name, train_limit=100, test_limit=20), all_data_dir, download=False)
        assert splits.num_classes == classes, name
        assert splits.image_shape == shape, name
        assert len(splits.train_labels) == 100 and len(splits.test_labels) == 20, name
        assert splits.train_images.dtype == np.uint8 and splits.train_labels.dtype == np.int64, name


def test_cifar10_pixels_and_labels_round_trip(tmp_path):
    root = write_cifar10(tmp_path, per_batch=20, test=10)
    raw = DATASETS.get("cifar10")(config=DataConfig(name="cifar10"), data_dir=root, download=False)
    first = pickle.loads((root / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    np.testing.assert_array_equal(raw.train_images[:20].reshape(20, 3072), first[b"data"])
    np.testing.assert_array_equal(raw.train_labels[:20], first[b"labels"])
    assert raw.train_images.shape == (100, 3, 32, 32) and raw.test_images.shape == (10, 3, 32, 32)


def test_digits_is_offline_and_fixed():
    splits = load_dataset(DataConfig(name="digits"), data_dir=None, download=False)
    assert splits.image_shape == (1, 8, 8)
    assert len(splits.train_labels) + len(splits.val_labels) + len(splits.test_labels) == 1797
    assert splits.train_images.max() == 255


def test_synthetic_has_the_requested_shape_and_classes():
    spec = SyntheticConfig(train_size=120, test_size=40, channels=1, image_size=12, num_classes=4, seed=3)
    splits = load_dataset(DataConfig(name="synthetic", val_fraction=0.25, synthetic=spec))
    assert splits.image_shape == (1, 12, 12)
    assert splits.num_classes == 4
    assert len(splits.train_labels) + len(splits.val_labels) == 120 and len(splits.test_labels) == 40
    assert set(np.unique(splits.train_labels)) == {0, 1, 2, 3}
    again = load_dataset(DataConfig(name="synthetic", val_fraction=0.25, synthetic=spec))
    np.testing.assert_array_equal(splits.train_images, again.train_images)


def test_synthetic_shape_is_set_through_validated_config():
    config = TrainConfig.from_flat(
        {
            "data.name": "synthetic",
            "data.synthetic.image_size": 16,
            "data.synthetic.channels": 2,
            "data.synthetic.num_classes": 3,
        }
    )
    assert config.data.synthetic == SyntheticConfig(image_size=16, channels=2, num_classes=3)
    assert config.to_flat()["data.synthetic.image_size"] == 16
    raw = DATASETS.get("synthetic")(config=config.data)
    assert raw.train_images.shape == (2048, 2, 16, 16) and raw.num_classes == 3
    with pytest.raises(ConfigError, match=r"p\.yaml: base\.data\.synthetic\.image_size: expected an integer >= 4"):
        TrainConfig.from_dict({"data": {"synthetic": {"image_size": 2}}}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"base\.data\.synthetic\.colour: unknown key; valid keys: train_size"):
        TrainConfig.from_dict({"data": {"synthetic": {"colour": 3}}}, source="p.yaml")
    huge = DataConfig(name="synthetic", synthetic=SyntheticConfig(train_size=1_000_000, image_size=512))
    with pytest.raises(ConfigError, match=r"data\.synthetic: .* GiB"):
        load_dataset(huge)


# --------------------------------------------------------------------- IDX file validation


def _mnist_files(root: Path, train: int = 50, test: int = 20, gz: bool = True) -> Path:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    raw = root / "MNIST" / "raw"
    for prefix, n in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 255, size=(n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, size=n))
    return raw


def test_idx_reads_plain_and_gzip_files(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        np.testing.assert_array_equal(read_idx(write_idx(tmp_path / name, images), 3), images)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[:-100], r"declares shape \(50, 28, 28\) = 39216 bytes but the file has 39116 \(truncated\)"),
        (lambda raw: raw + b"\0" * 7, r"\(trailing bytes\)"),
        (lambda raw: raw[:6], r"truncated header \(6 bytes, need 16\)"),
        (lambda raw: raw[:2], r"2 bytes is too short for an IDX header"),
        (
            lambda raw: b"\x00\x00\x0d\x03" + raw[4:],
            r"not an unsigned-byte IDX file with 3 dimension\(s\) \(magic bytes 00000d03",
        ),
        (lambda raw: raw[:4] + b"\x00\x00\x00\x00" + raw[8:16], r"holds no images"),
    ],
)
def test_damaged_idx_file_is_refused_naming_it(tmp_path, damage, message):
    raw_dir = _mnist_files(tmp_path, gz=False)
    target = raw_dir / "train-images-idx3-ubyte"
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(DataFileError, match=message) as err:
        load_dataset(DataConfig(name="mnist"), tmp_path, download=False)
    assert str(target) in str(err.value)


def test_labels_file_in_place_of_images_is_refused(tmp_path):
    raw_dir = _mnist_files(tmp_path, gz=False)
    target = raw_dir / "t10k-images-idx3-ubyte"
    target.write_bytes((raw_dir / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DataFileError, match=r"t10k-images-idx3-ubyte: not an unsigned-byte IDX file with 3 dimension"):
        load_dataset(DataConfig(name="mnist"), tmp_path, download=False)


def test_images_and_labels_must_agree(tmp_path):
    raw_dir = _mnist_files(tmp_path)
    write_idx(raw_dir / "train-labels-idx1-ubyte.gz", np.zeros(49))
    with pytest.raises(
        DataFileError, match=r"train-images-idx3-ubyte.gz has 50 images but .*train-labels-idx1-ubyte.gz has 49 labels"
    ):
        load_dataset(DataConfig(name="mnist"), tmp_path, download=False)
    write_idx(raw_dir / "train-labels-idx1-ubyte.gz", np.full(50, 12))
    with pytest.raises(DataFileError, match=r"train-labels-idx1-ubyte.gz: label 12 is outside 0..9"):
        load_dataset(DataConfig(name="mnist"), tmp_path, download=False)


def test_train_and_test_image_sizes_must_agree(tmp_path):
    raw_dir = _mnist_files(tmp_path)
    write_idx(raw_dir / "t10k-images-idx3-ubyte.gz", np.zeros((20, 32, 32)))
    with pytest.raises(DataFileError, match=r"holds 28×28 images but .*t10k-images-idx3-ubyte.gz holds 32×32"):
        load_dataset(DataConfig(name="mnist"), tmp_path, download=False)


def test_corrupt_gzip_is_refused_naming_it(tmp_path):
    raw_dir = _mnist_files(tmp_path)
    target = raw_dir / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:30])
    with pytest.raises(DataFileError, match=r"t10k-labels-idx1-ubyte.gz: cannot be read as gzip"):
        load_dataset(DataConfig(name="mnist"), tmp_path, download=False)
    target.write_bytes(b"not gzip at all")
    with pytest.raises(DataFileError, match=r"t10k-labels-idx1-ubyte.gz: cannot be read as gzip"):
        read_idx_pair(raw_dir / "t10k-images-idx3-ubyte.gz", target)


def test_extracted_file_is_preferred_over_gzip(tmp_path):
    raw_dir = _mnist_files(tmp_path)
    write_idx(raw_dir / "t10k-images-idx3-ubyte", np.full((20, 28, 28), 7))
    raw = DATASETS.get("mnist")(config=DataConfig(name="mnist"), data_dir=tmp_path, download=False)
    assert (raw.test_images == 7).all()


# ------------------------------------------------------------------- CIFAR file validation


def _rewrite_batch(path: Path, change) -> None:
    batch = pickle.loads(path.read_bytes())
    change(batch)
    path.write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: b.pop(b"labels"),
            r"expected a dict with keys b'data' and b'labels', found \[b'batch_label', b'data'",
        ),
        (
            lambda b: b.update({b"data": b[b"data"].reshape(-1, 3, 32, 32)}),
            r"uint8 array of shape \(N, 3072\), got \(40, 3, 32, 32\)",
        ),
        (lambda b: b.update({b"data": b[b"data"].astype(np.float32)}), r"uint8 array of shape \(N, 3072\)"),
        (lambda b: b.update({b"labels": b[b"labels"][:-1]}), r"40 images but 39 labels"),
        (lambda b: b.update({b"labels": [10] + b[b"labels"][1:]}), r"labels must lie in 0..9, found 0..10"),
    ],
)
def test_malformed_cifar_batch_is_refused_naming_it(tmp_path, change, message):
    root = write_cifar10(tmp_path)
    target = root / "cifar-10-batches-py" / "data_batch_3"
    _rewrite_batch(target, change)
    with pytest.raises(DataFileError, match=message) as err:
        load_dataset(DataConfig(name="cifar10"), root, download=False)
    assert str(target) in str(err.value)


@pytest.mark.parametrize("damage", [lambda raw: raw[: len(raw) // 2], lambda raw: b"garbage" + raw, lambda raw: b""])
def test_truncated_or_foreign_cifar_file_is_refused_naming_it(tmp_path, damage):
    root = write_cifar10(tmp_path)
    target = root / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(DataFileError, match=r"test_batch: not a readable CIFAR batch"):
        load_dataset(DataConfig(name="cifar10"), root, download=False)


def test_cifar100_uses_fine_labels(tmp_path):
    root = write_cifar100(tmp_path, train=50, test=10)
    raw = DATASETS.get("cifar100")(config=DataConfig(name="cifar100"), data_dir=root, download=False)
    fine = pickle.loads((root / "cifar-100-python" / "train").read_bytes())[b"fine_labels"]
    np.testing.assert_array_equal(raw.train_labels, fine)
    assert raw.num_classes == 100


# ------------------------------------------------------------------------ malicious pickles


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsExec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize(
    ("payload", "refused"), [(_RunsShell, f"{os.system.__module__}.system"), (_RunsExec, "builtins.exec")]
)
def test_malicious_cifar_pickle_is_refused_before_running(tmp_path, payload, refused):
    root = write_cifar10(tmp_path / "data")
    marker = tmp_path / "marker"
    target = root / "cifar-10-batches-py" / "data_batch_2"
    target.write_bytes(pickle.dumps({b"data": payload(marker), b"labels": [0]}))
    pickle.loads(pickle.dumps(payload(marker)))  # plain pickle runs the payload ...
    assert marker.exists()
    marker.unlink()  # ... so its absence below proves the safe loader never ran it
    with pytest.raises(UnsafePickleError) as err:
        load_dataset(DataConfig(name="cifar10"), root, download=False)
    assert not marker.exists()
    assert str(target) in str(err.value) and refused in str(err.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_load_rebuilds_numpy_arrays_of_every_protocol(tmp_path, protocol):
    data = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2], b"x": (1.5, {b"y"})}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = safe_load(path)
    np.testing.assert_array_equal(loaded[b"data"], data[b"data"])
    assert loaded[b"labels"] == [1, 2] and loaded[b"x"] == (1.5, {b"y"})


# ------------------------------------------------------------------------------- downloads


def test_missing_files_offline_say_what_where_and_how(tmp_path):
    _mnist_files(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingDataError) as err:
        load_dataset(DataConfig(name="mnist"), tmp_path, download=False)
    text = str(err.value)
    assert f"missing data files under {tmp_path}: MNIST/raw/t10k-labels-idx1-ubyte;" in text
    assert "downloading is off (--no-download)" in text
    assert f"Put the four MNIST IDX files (.gz or extracted) in {tmp_path / 'MNIST' / 'raw'}" in text
    with pytest.raises(
        MissingDataError,
        match=r"cifar-10-batches-py/data_batch_1, .*test_batch.*Extract the cifar-10-batches-py archive",
    ):
        load_dataset(DataConfig(name="cifar10"), tmp_path, download=False)


def _lock_is_held(root: Path) -> bool:
    from filelock import FileLock, Timeout

    try:
        FileLock(str(root / ".tunelab-download.lock"), timeout=0).acquire()
    except Timeout:
        return True
    return False


def test_download_goes_through_torchvision_under_the_lock(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeMNIST:  # what torchvision.datasets.MNIST(root, train, download=True) leaves on disk
        def __init__(self, root, train, download):
            calls.append((Path(root), train, download, _lock_is_held(Path(root))))
            prefix, n = ("train", 60) if train else ("t10k", 20)
            raw = Path(root) / "MNIST" / "raw"
            write_idx(raw / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28)))
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    splits = load_dataset(DataConfig(name="mnist"), tmp_path / "new", download=True)
    assert calls == [(tmp_path / "new", True, True, True), (tmp_path / "new", False, True, True)]
    assert len(splits.train_labels) + len(splits.val_labels) == 60 and len(splits.test_labels) == 20
    assert not _lock_is_held(tmp_path / "new")  # released afterwards
    load_dataset(DataConfig(name="mnist"), tmp_path / "new", download=True)
    assert len(calls) == 2  # files present: no second download


def test_concurrent_downloads_fetch_once(tmp_path):
    files = [tmp_path / "set" / "a", tmp_path / "set" / "b"]
    fetches = []

    def fetch(root: Path) -> None:
        fetches.append(root)
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        for f in files:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("x")

    threads = [threading.Thread(target=ensure_files, args=(tmp_path, files, True, fetch, "")) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fetches == [tmp_path] and all(f.exists() for f in files)


def test_failed_download_explains_itself(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, root, train, download):
            raise ConnectionError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(MissingDataError) as err:
        load_dataset(DataConfig(name="cifar10"), tmp_path, download=True)
    text = str(err.value)
    assert "the download failed (ConnectionError: no route to host)" in text
    assert "cifar-10-batches-py/data_batch_1" in text and "or run once with network access" in text


# ---------------------------------------------------------------------------------- splits


def test_stratified_split_is_seeded_disjoint_and_proportional():
    labels = np.repeat(np.arange(5), [100, 200, 300, 400, 1000])
    train, val = stratified_split(labels, 0.1, seed=7)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    counts = np.bincount(labels[val], minlength=5)
    np.testing.assert_array_equal(counts, [10, 20, 30, 40, 100])
    again, _ = stratified_split(labels, 0.1, seed=7)
    other, _ = stratified_split(labels, 0.1, seed=8)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)


def test_limits_are_exact_stratified_and_keep_test_separate(tmp_path):
    root = write_fashion_mnist(tmp_path, train=400, test=150)
    full = load_dataset(DataConfig(name="fashion_mnist", val_fraction=0.2), root, download=False)
    assert len(full.val_labels) == pytest.approx(80, abs=5)
    small = load_dataset(
        DataConfig(name="fashion_mnist", val_fraction=0.2, train_limit=101, test_limit=33), root, download=False
    )
    assert len(small.train_labels) == 101 and len(small.test_labels) == 33
    assert len(small.val_labels) == 25  # a quarter of train_limit
    # Stratified: each class keeps its share of the full training split to within one image.
    share = np.bincount(full.train_labels, minlength=10) * 101 / len(full.train_labels)
    assert np.abs(np.bincount(small.train_labels, minlength=10) - share).max() < 1
    # Limited sets are subsets: validation images never leak into training, test stays the official test set.
    train_rows = {r.tobytes() for r in small.train_images}
    full_val_rows = {r.tobytes() for r in full.val_images}
    assert not train_rows & full_val_rows
    test_rows = {r.tobytes() for r in full.test_images}
    assert {r.tobytes() for r in small.test_images} <= test_rows
    assert len(full.test_labels) == 150


def test_without_test_hides_the_test_set():
    splits = load_dataset(DataConfig(name="digits"))
    hidden = splits.without_test()
    assert len(hidden.test_labels) == 0 and hidden.test_images.shape[1:] == splits.test_images.shape[1:]
    np.testing.assert_array_equal(hidden.train_images, splits.train_images)


def test_gzip_helper_matches_torchvision_layout(tmp_path):
    # The writers in conftest produce the byte layout the loaders read (guards the fixtures themselves).
    path = write_idx(tmp_path / "x-idx1-ubyte.gz", np.arange(5))
    raw = gzip.decompress(path.read_bytes())
    assert raw[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x05" and raw[8:] == bytes(range(5))
