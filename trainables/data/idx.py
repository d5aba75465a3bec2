"""IDX files (MNIST, Fashion-MNIST), read with structural validation.

The loader trusts structure, not checksums: magic number, dimension count,
declared sizes and byte length must agree, so a truncated or foreign file is
refused with its name, while a valid subset of the official file (whose MD5
differs) is accepted.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np


class DataFileError(ValueError):
    """A data file that is missing, truncated, corrupt or of the wrong kind."""


_UBYTE = 0x08


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Return the uint8 array stored in IDX file ``path`` (optionally gzipped)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise DataFileError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'IDX'} ({err})") from None
    if len(raw) < 4:
        raise DataFileError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _UBYTE or ndim != expected_ndim:
        raise DataFileError(
            f"{path}: not an unsigned-byte IDX file with {expected_ndim} dimension(s) "
            f"(magic bytes {raw[:4].hex()}, expected 000008{expected_ndim:02x})"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataFileError(
            f"{path}: header declares shape {tuple(shape)} = {expected} bytes but the file has {len(raw)}"
            + (" (truncated)" if len(raw) < expected else " (trailing bytes)")
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_pair(images_path: Path, labels_path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label files; images become (N, 1, H, W) uint8."""
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if len(images) == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DataFileError(f"{images_path}: holds no images (shape {images.shape})")
    if len(images) != len(labels):
        raise DataFileError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; they must match"
        )
    if labels.size and labels.max() >= num_classes:
        raise DataFileError(f"{labels_path}: label {int(labels.max())} is outside 0..{num_classes - 1}")
    return images[:, None, :, :], labels.astype(np.int64)
