"""A restricted unpickler for CIFAR batches: numpy arrays and plain containers only.

CIFAR-10/100 ship as Python pickles, and ``pickle.load`` on an untrusted file
runs arbitrary code. ``safe_load`` resolves only the globals needed to rebuild
numpy arrays (and the builtins of plain data); a pickle that names anything
else, ``os.system`` say, is refused before any of its code runs.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path
from typing import Any

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # Protocol 5 pickles rebuild arrays from a raw buffer.
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("collections", "OrderedDict"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 pickles (the official CIFAR files, protocol 2) spell builtins "__builtin__" and so on;
        # check the Python 3 name that pickle itself would import.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refused to load: the pickle asks for {module}.{name}, "
            "but a data batch may only contain numpy arrays and plain containers"
        )


def safe_load(path: Path) -> Any:
    """Unpickle ``path`` allowing only numpy arrays and plain containers."""
    with open(path, "rb") as handle:
        return _RestrictedUnpickler(handle, str(path)).load()
