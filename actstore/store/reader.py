"""The reader: a store's metadata in memory, its activations read lazily."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .base import ACTIVATIONS, LayerSpec, StoreReader


class RowsNotWrittenError(ValueError):
    """A selection asked for rows the store does not hold yet."""


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
        selection, post = _normalise(key, self.shape)
        rows = selection[0]
        checked = np.arange(self.shape[0])[rows] if not isinstance(rows, np.ndarray) else rows
        missing = ~self._written[checked]
        if np.any(missing):
            first = int(np.atleast_1d(checked)[np.atleast_1d(missing)][0])
            raise RowsNotWrittenError(
                f"{int(np.sum(missing))} selected rows of {self.name!r} are not written yet "
                f"(first: row {first}); select from store.written_rows")
        data = self._reader.read(self._key, selection)
        return post(data)


def _normalise(key: Any, shape: tuple[int, ...]):
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
        if isinstance(k, (int, np.integer)):
            k = int(k)
            if not -size <= k < size:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {size}")
            selection.append(k % size)
        elif isinstance(k, slice):
            start, stop, step = k.indices(size)
            if step == 1:
                selection.append(slice(start, max(start, stop)))
            else:
                selection.append(np.arange(start, stop, step))
        else:
            index = np.asarray(k)
            if index.dtype == bool:
                if index.shape != (size,):
                    raise IndexError(f"boolean index of shape {index.shape} does not match axis {axis} of size {size}")
                index = np.flatnonzero(index)
            if index.dtype.kind not in "iu" or index.ndim != 1:
                raise IndexError(f"unsupported index for axis {axis}: {k!r}")
            if index.size and (index.min() < -size or index.max() >= size):
                raise IndexError(f"index out of bounds for axis {axis} with size {size}")
            selection.append(index % size if index.size else index.astype(np.int64))
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


class Store:
    """An open store: row-aligned metadata in memory, layers as :class:`LazyArray`.

    Rows are the images in the order of ``file_names``. ``written_rows`` are
    the rows finished when the store was opened; a store being written is
    read as of that moment.
    """

    def __init__(self, path: Path, reader: StoreReader) -> None:
        self.path = Path(path)
        self.format = reader.format_name
        self._reader = reader
        self.attrs: dict[str, Any] = reader.root_attrs()
        self.written: np.ndarray = np.asarray(reader.array("written")[:]).astype(bool)
        self.file_names: np.ndarray = np.asarray(reader.array("file_names")[:], dtype=object).astype(str)
        self.targets: np.ndarray = np.asarray(reader.array("targets")[:], dtype=np.int64)
        self.classes: list[str] = [str(c) for c in reader.array("classes")[:]]
        self.layers: list[str] = reader.layer_names()
        self._specs = {name: LayerSpec.from_attrs(reader.layer_attrs(name),
                                                  reader.array(f"{ACTIVATIONS}/{name}").chunks)
                       for name in self.layers}

    @property
    def status(self) -> str:
        return str(self.attrs.get("status", "incomplete"))

    @property
    def complete(self) -> bool:
        return self.status == "complete" and bool(self.written.all())

    @property
    def written_rows(self) -> np.ndarray:
        return np.flatnonzero(self.written)

    def __len__(self) -> int:
        return len(self.file_names)

    def spec(self, layer: str) -> LayerSpec:
        return self._specs[self._layer_name(layer)]

    def layer_attrs(self, layer: str) -> dict[str, Any]:
        """The layer's attributes as stored."""
        return self._reader.layer_attrs(self._layer_name(layer))

    def __getitem__(self, layer: str) -> LazyArray:
        name = self._layer_name(layer)
        return LazyArray(self._reader, name, self.written, self._specs[name])

    def __contains__(self, layer: str) -> bool:
        return layer in self._specs

    def _layer_name(self, layer: str) -> str:
        if layer not in self._specs:
            raise KeyError(f"no layer {layer!r} in {self.path}; layers: {', '.join(self.layers)}")
        return layer

    def stored_bytes(self, layer: str) -> int:
        return self._reader.chunk_stats(f"{ACTIVATIONS}/{layer}")[0]

    def summary(self) -> dict[str, Any]:
        """What ``actstore info`` shows: layers, sizes, status and provenance."""
        layers = {}
        for name in self.layers:
            spec = self._specs[name]
            stored, chunks_stored = self._reader.chunk_stats(f"{ACTIVATIONS}/{name}")
            raw = int(self.written.sum()) * spec.bytes_per_image
            layers[name] = {"shape": [len(self), *spec.shape], "dims": list(spec.dims),
                            "native_shape": list(spec.native_shape), "dtype": spec.dtype,
                            "chunks": list(spec.chunks), "chunks_stored": chunks_stored,
                            "bytes_raw": raw, "bytes_stored": stored,
                            "compression_ratio": round(raw / stored, 2) if stored else None}
        return {"path": str(self.path), "format": self.format, "status": self.status,
                "rows": len(self), "rows_written": int(self.written.sum()),
                "classes": len(self.classes), "layers": layers,
                "attrs": {k: v for k, v in self.attrs.items() if k != "fingerprint"}}

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.path} format={self.format} rows={len(self)} layers={self.layers} status={self.status}>"
