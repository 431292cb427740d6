"""Which rows and units a NumPy-style key selects, and the refusal of unwritten rows.

Shared by the lazy reader and the dask/xarray views, so both index alike.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import RowsNotWrittenError


def check_written(written: np.ndarray, rows: Any, name: str) -> None:
    """Raise :class:`RowsNotWrittenError` if any of ``rows`` (an int, a slice
    or an index array) is not written: unwritten rows hold fill values, not data."""
    checked = np.arange(len(written))[rows] if not isinstance(rows, np.ndarray) else rows
    missing = ~written[checked]
    if np.any(missing):
        first = int(np.atleast_1d(checked)[np.atleast_1d(missing)][0])
        raise RowsNotWrittenError(
            f"{int(np.sum(missing))} selected rows of {name!r} are not written yet "
            f"(first: row {first}); select from store.written_rows")


def axis_index(k: Any, size: int, axis: int) -> int | slice | np.ndarray:
    """One axis of a NumPy-style key as an int, a step-1 slice, or an int
    array in the order asked (bool masks and negative ints resolved)."""
    if isinstance(k, (int, np.integer)):
        k = int(k)
        if not -size <= k < size:
            raise IndexError(f"index {k} is out of bounds for axis {axis} with size {size}")
        return k % size
    if isinstance(k, slice):
        start, stop, step = k.indices(size)
        return slice(start, max(start, stop)) if step == 1 else np.arange(start, stop, step)
    index = np.asarray(k)
    if index.dtype == bool:
        if index.shape != (size,):
            raise IndexError(f"boolean index of shape {index.shape} does not match axis {axis} of size {size}")
        index = np.flatnonzero(index)
    if index.size == 0:
        return np.zeros(0, dtype=np.int64)
    if index.dtype.kind not in "iu" or index.ndim != 1:
        raise IndexError(f"unsupported index for axis {axis}: {k!r}")
    if index.min() < -size or index.max() >= size:
        raise IndexError(f"index out of bounds for axis {axis} with size {size}")
    return index.astype(np.int64) % size


def rows_or_nan(layer: Any, rows: np.ndarray, written: np.ndarray) -> np.ndarray:
    """``layer[rows]`` for sorted ``rows``, NaN in those never written (images
    skipped as unreadable): what an export of a complete store writes."""
    kept = written[rows]
    if kept.all() and rows[-1] - rows[0] == len(rows) - 1:   # the usual block: one contiguous read
        return layer[int(rows[0]):int(rows[-1]) + 1]
    out = np.full((len(rows), *layer.shape[1:]), np.nan, dtype=layer.dtype)
    if kept.any():
        out[kept] = layer[rows[kept]]
    return out
