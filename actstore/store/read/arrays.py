"""A layer read on demand: :class:`LazyArray` (the stored shape) and :class:`FlatArray` (images x units).

Only the chunks that hold a selection are read; rows not yet written raise
:class:`~actstore.errors.RowsNotWrittenError` instead of returning fill values.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backends.base import StoreReader
from ..integrity import lost
from ..layout import ACTIVATIONS, LayerSpec
from .selection import axis_index as _axis_index
from .selection import check_written

# Largest block a flat column read decompresses at once: its memory use stays
# at this plus the result, whatever the number of images.
READ_BLOCK_BYTES = 64 * 2**20


class LazyArray:
    """One layer, read on demand with NumPy-style indexing.

    The first axis (images) takes an int, a slice, a list or array of ints
    (any order, repeats allowed) or a boolean mask; the other axes take ints,
    slices or int lists. Only the chunks that hold the selection are read.
    Rows not yet written raise :class:`RowsNotWrittenError` instead of
    returning fill values.
    """

    def __init__(self, reader: StoreReader, name: str, written: np.ndarray, spec: LayerSpec) -> None:
        self._reader = reader
        self._key = f"{ACTIVATIONS}/{name}"
        self._written = written
        self.spec = spec
        self.name = name
        handle = reader.array(self._key)
        self.shape: tuple[int, ...] = tuple(handle.shape)
        self.dtype = np.dtype(handle.dtype)
        self.chunks: tuple[int, ...] = tuple(handle.chunks)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dims(self) -> tuple[str, ...]:
        return self.spec.dims

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<LazyArray {self.name!r} shape={self.shape} dtype={self.dtype} chunks={self.chunks}>"

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[...]
        return data.astype(dtype) if dtype is not None else data

    def __getitem__(self, key: Any) -> np.ndarray:
        selection, post = normalise(key, self.shape)
        check_written(self._written, selection[0], self.name)
        return post(read_layer(self._reader, self.name, self.shape[0], selection))


def read_layer(reader: StoreReader, name: str, n_rows: int, selection: tuple) -> np.ndarray:
    """``selection`` (an orthogonal selection, rows first) of layer ``name``
    of an ``n_rows`` store, read through ``reader``.

    Raises :class:`~actstore.errors.CorruptStoreError` when a stored chunk or
    shard of the selected rows is gone: those rows would read the fill value
    (NaN), not their data. Every way of reading a layer (``store[layer]``,
    ``to_dask``, ``to_xarray``) reads through here.
    """
    key = f"{ACTIVATIONS}/{name}"
    data = reader.read(key, selection)
    if data.dtype.kind != "f" or not data.size or not np.isnan(data.min()):
        return data
    # NaN: the fill value of a lost file, or data that is NaN (a skipped image's row)
    rows = np.atleast_1d(np.arange(n_rows)[selection[0]])
    step = reader.block_rows(key)
    gone = reader.missing_blocks(key, np.unique(rows // step).tolist())
    if gone:
        files = sorted({path for paths in gone.values() for path in paths})
        raise lost(name, rows[np.isin(rows // step, list(gone))],
                   ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else ""))
    return data


def normalise(key: Any, shape: tuple[int, ...]):
    """Turn a NumPy-style key into an orthogonal selection with sorted unique
    index arrays, and a function that restores the order the user asked for."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (len(shape) - len(key) + 1) + key[at + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices: array has {len(shape)} dimensions")
    key = key + (slice(None),) * (len(shape) - len(key))
    selection, inverses = [], []
    for axis, (k, size) in enumerate(zip(key, shape)):
        selection.append(_axis_index(k, size, axis))
        if isinstance(selection[-1], np.ndarray):
            unique, inverse = np.unique(selection[-1], return_inverse=True)
            sorted_already = unique.size == selection[-1].size and np.all(unique == selection[-1])
            selection[-1] = unique
            inverses.append(None if sorted_already else inverse)
        else:
            inverses.append(None)

    def post(data: np.ndarray) -> np.ndarray:
        out_axis = 0
        for sel, inverse in zip(selection, inverses):
            if isinstance(sel, int):
                continue
            if inverse is not None:
                data = np.take(data, inverse, axis=out_axis)
            out_axis += 1
        return data

    return tuple(selection), post


class FlatArray:
    """A layer seen as (images, units), units in C order of the per-image shape
    (unit ``k`` of a conv layer is ``np.unravel_index(k, (C, H, W))``).

    A column selection reads only the chunks that hold those units, in row
    blocks of at most :data:`READ_BLOCK_BYTES`, so the (N, C, H, W) layer
    is never materialised. Rows take what :class:`LazyArray` takes; columns
    take an int, a slice, an int list (any order, repeats) or a bool mask.

    Example:
        >>> flat = store.flat("features.0")                   # doctest: +SKIP
        >>> flat.shape                                         # (N, 64*55*55)
        >>> flat[:, [7, 3025]]                                 # two units, every image
    """

    def __init__(self, layer: LazyArray) -> None:
        self.layer = layer
        self.name = layer.name
        self.units_shape: tuple[int, ...] = layer.shape[1:]
        self.shape: tuple[int, int] = (layer.shape[0], math.prod(self.units_shape))
        self.dtype = layer.dtype

    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<FlatArray {self.name!r} shape={self.shape} dtype={self.dtype} units of {self.units_shape}>"

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[:, :]
        return data.astype(dtype) if dtype is not None else data

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key) or len(key) > 2:
            raise IndexError("a flat layer takes [rows] or [rows, units]")
        rows_key, units_key = (key + (slice(None), slice(None)))[:2]
        if len(self.units_shape) == 1:
            return self.layer[rows_key, units_key]
        units = _axis_index(units_key, self.shape[1], 1)
        wanted = np.atleast_1d(np.arange(self.shape[1])[units] if isinstance(units, slice) else units)
        rows = _axis_index(rows_key, self.shape[0], 0)
        row_list = np.atleast_1d(np.arange(self.shape[0])[rows] if isinstance(rows, slice) else rows)
        check_written(self.layer._written, row_list, self.name)
        unique_rows, row_order = np.unique(row_list, return_inverse=True)
        out = self._read_units(unique_rows, wanted)[row_order.reshape(-1)]
        if isinstance(rows, int):
            out = out[0]
        return out[..., 0] if isinstance(units, int) else out

    def _read_units(self, rows: np.ndarray, units: np.ndarray) -> np.ndarray:
        """Read ``units`` for sorted unique ``rows``: the channels that hold them,
        cropped to their bounding box, one row block at a time."""
        index = np.unravel_index(units, self.units_shape)
        channels = np.unique(index[0])
        lows = [int(i.min()) if i.size else 0 for i in index[1:]]
        box = tuple(slice(lo, int(i.max()) + 1 if i.size else 0) for lo, i in zip(lows, index[1:]))
        box_shape = (len(channels), *(b.stop - b.start for b in box))
        within = np.ravel_multi_index((np.searchsorted(channels, index[0]),
                                       *(i - lo for i, lo in zip(index[1:], lows))), box_shape)
        row_bytes = max(1, math.prod(box_shape) * self.dtype.itemsize)
        block = self.layer.chunks[0] * max(1, READ_BLOCK_BYTES // (row_bytes * self.layer.chunks[0]))
        out = np.empty((len(rows), len(units)), dtype=self.dtype)
        for start in range(0, len(rows), block):
            part = self.layer[(rows[start:start + block], channels, *box)]
            out[start:start + block] = part.reshape(len(part), -1)[:, within]
        return out
