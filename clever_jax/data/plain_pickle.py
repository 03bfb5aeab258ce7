"""Reading pickles that may hold only plain data: containers, strings and numbers.

A pickle can name any importable callable to build its objects; the unpickler here allows only
numpy's scalar constructor (for numeric dtypes: pickled numpy integers and floats use it) and
refuses every other global, so a file cannot run code or build arbitrary objects.
"""

from __future__ import annotations

import pickle

import numpy as np

from clever_jax.data.jsonio import DataError


class _PlainUnpickler(pickle.Unpickler):
    """Builds plain containers, strings and numbers only: the one global allowed is numpy's scalar
    constructor (with its dtype) for numeric dtypes, which pickled numpy integers and floats use."""

    def find_class(self, module: str, name: str):
        if name == "dtype" and module == "numpy":
            return np.dtype
        if name == "scalar" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            def scalar(dtype: np.dtype, data: bytes = b""):
                if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes) \
                        or len(data) != dtype.itemsize:
                    raise pickle.UnpicklingError(f"a numpy scalar of dtype {dtype!r}, only numbers are accepted")
                return np.frombuffer(data, dtype)[0].item()
            return scalar
        raise pickle.UnpicklingError(f"refuses to build {module}.{name}: only plain containers, strings and "
                                     "numbers are accepted")


def _plain(value) -> bool:
    """Whether value is built of dicts, lists, tuples, sets, strings, numbers and None only."""
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float)


def load_pickle(path: str):
    """A pickle of plain containers, strings and numbers; DataError naming the file otherwise."""
    try:
        with open(path, "rb") as f:
            value = _PlainUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path}: not a pickle of plain containers, strings and numbers: {e}") from e
    if not _plain(value):  # e.g. a bare numpy dtype
        raise DataError(f"{path}: holds something other than plain containers, strings and numbers")
    return value
