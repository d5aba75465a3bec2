"""The data-set registry and the shared download helper.

Every loader is registered by name and called as
``loader(config=DataConfig, data_dir=Path, download=bool)``; it returns a
``RawDataset`` (uint8 images (N, C, H, W), int64 labels, official train and
test sets). File-based loaders read torchvision's on-disk layout under
``data_dir`` and call ``ensure_files`` first: a missing file is downloaded
through torchvision under a file lock (so parallel processes download once), or,
when downloading is off or fails, reported with where it was looked for and
how to get it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from trainables.registry import Registry

log = logging.getLogger(__name__)

DATASETS = Registry("data set")


class MissingDataError(FileNotFoundError):
    """Data files are absent and could not be downloaded."""


def ensure_files(
    root: Path,
    files: Sequence[Path],
    download: bool,
    fetch: Callable[[Path], None],
    how_to_get: str,
    present: Callable[[Path], bool] = Path.exists,
) -> None:
    """Make sure every path in ``files`` is ``present``, downloading under a file lock if allowed.

    ``fetch(root)`` downloads into ``root``; the lock file ``root/.tunelab-download.lock``
    makes concurrent callers (several trials or drivers) wait for one download
    instead of writing the same files at once. ``present`` lets a loader accept
    alternative forms of a file (MNIST's ``.gz`` or extracted).
    """
    missing = [f for f in files if not present(f)]
    if not missing:
        return
    problem = ""
    if download:
        from filelock import FileLock

        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".tunelab-download.lock")):
            if any(not present(f) for f in files):  # another process may have finished meanwhile
                log.info("downloading into %s", root)
                try:
                    fetch(root)
                except Exception as err:  # network errors come in many types
                    problem = f"; the download failed ({type(err).__name__}: {err})"
        missing = [f for f in files if not present(f)]
        if not missing:
            return
    else:
        problem = "; downloading is off (--no-download)"
    names = ", ".join(str(f.relative_to(root)) for f in missing)
    raise MissingDataError(f"missing data files under {root}: {names}{problem}. {how_to_get}")
