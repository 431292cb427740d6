"""The reader: a store's metadata in memory, its activations read lazily.

Analysis code selects rows by class or file name (:meth:`Store.select`),
reads units of a conv layer as columns (:meth:`Store.flat`), streams
(:meth:`Store.iter_batches`) or hands a layer to dask / xarray
(:meth:`Store.to_dask`, :meth:`Store.to_xarray`); none of them reads a chunk
that holds nothing selected.
"""
from __future__ import annotations

import fnmatch
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ..errors import UserError
from .base import ACTIVATIONS, LayerSpec, StoreReader
from .location import location
from .integrity import lost, row_runs
from .provenance import is_complete, skipped_rows
from .selection import RowsNotWrittenError, check_written  # noqa: F401  (callers catch it from here)
from .selection import axis_index as _axis_index

if TYPE_CHECKING:  # optional dependencies, imported where used
    import dask.array
    import xarray

# Largest block a flat column read decompresses at once: its memory use stays
# at this plus the result, whatever the number of images.
READ_BLOCK_BYTES = 64 * 2**20
GLOB_CHARS = re.compile(r"[*?\[]")


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
        check_written(self._written, selection[0], self.name)
        data = self._reader.read(self._key, selection)
        if data.dtype.kind == "f" and data.size and np.isnan(data.min()):   # the fill value, or data that is NaN
            self._refuse_lost(selection[0])
        return post(data)

    def _refuse_lost(self, rows_key: Any) -> None:
        """Raise :class:`~actstore.errors.CorruptStoreError` when a stored
        chunk or shard of these written rows is gone: they would read the
        fill value (NaN), not their data."""
        rows = np.atleast_1d(np.arange(self.shape[0])[rows_key])
        step = self._reader.block_rows(self._key)
        gone = self._reader.missing_blocks(self._key, np.unique(rows // step).tolist())
        if gone:
            files = sorted({path for paths in gone.values() for path in paths})
            raise lost(self.name, rows[np.isin(rows // step, list(gone))],
                       ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else ""))


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


class Store:
    """An open store: row-aligned metadata in memory, layers as :class:`LazyArray`.

    Rows are the images in the order of ``file_names``. ``written_rows`` are
    the rows finished when the store was opened; a store being written is
    read as of that moment.
    """

    def __init__(self, path: Path, reader: StoreReader) -> None:
        self.path = location(path)
        self.format = reader.format_name
        self._reader = reader
        self.attrs: dict[str, Any] = reader.root_attrs()
        self.written: np.ndarray = np.asarray(reader.array("written")[:]).astype(bool)
        self.file_names: np.ndarray = np.asarray(reader.array("file_names")[:], dtype=object).astype(str)
        self.targets: np.ndarray = np.asarray(reader.array("targets")[:], dtype=np.int64)
        self.classes: list[str] = [str(c) for c in reader.array("classes")[:]]
        self.layers: list[str] = reader.layer_names()
        # Rows of images found unreadable mid-run: never written, not missing.
        self.skipped: np.ndarray = skipped_rows(self.attrs, len(self.file_names))
        self._specs = {name: LayerSpec.from_attrs(reader.layer_attrs(name),
                                                  reader.array(f"{ACTIVATIONS}/{name}").chunks)
                       for name in self.layers}

    @property
    def status(self) -> str:
        return str(self.attrs.get("status", "incomplete"))

    @property
    def complete(self) -> bool:
        return self.status == "complete" and is_complete(self.written, self.skipped)

    @property
    def written_rows(self) -> np.ndarray:
        return np.flatnonzero(self.written)

    def __len__(self) -> int:
        return len(self.file_names)

    def spec(self, layer: str) -> LayerSpec:
        return self._specs[self._layer_name(layer)]

    def missing_rows(self, layer: str) -> list[tuple[int, int]]:
        """Runs ``(first, last)`` of written rows whose stored chunk (or shard)
        of ``layer`` is absent, e.g. lost in a copy: they would read the fill
        value. Empty for a whole store."""
        key = f"{ACTIVATIONS}/{self._layer_name(layer)}"
        step = self._reader.block_rows(key)
        blocks = np.unique(self.written_rows // step)
        gone = np.zeros(len(self), dtype=bool)
        for block in self._reader.missing_blocks(key, blocks.tolist()):
            gone[block * step:(block + 1) * step] = True
        return row_runs(np.flatnonzero(gone & self.written))

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

    @property
    def class_names(self) -> np.ndarray:
        """The class name of every row (``""`` for a store of one flat folder)."""
        if not self.classes:
            return np.full(len(self), "", dtype=str)
        return np.asarray(self.classes, dtype=str)[self.targets]

    def select(self, classes: str | Sequence[str] | None = None,
               files: str | Sequence[str] | None = None) -> np.ndarray:
        """Rows of the images of some classes and/or some files, to index layers with.

        Rows come in store order; when ``files`` are all exact names (no
        ``*``, ``?`` or ``[``) they come in the order given. Patterns match the
        whole relative file name (``dog/*``, ``*_img1.png``); ``*`` also
        matches ``/``. Given both, a row must match both.

        Args:
            classes: class name(s), as in ``store.classes``.
            files: file name(s) as in ``store.file_names``, or glob patterns.

        Returns:
            An int64 array of row indices (empty when no pattern matches).

        Raises:
            UserError: an unknown class or exact file name, or classes asked
                of a store whose images had none.

        Example:
            >>> rows = store.select(classes=["dog"])                 # doctest: +SKIP
            >>> dogs = store["features.0"][rows]                    # (n_dogs, 64, 55, 55)
        """
        keep = np.ones(len(self), dtype=bool)
        if classes is not None:
            keep &= np.isin(self.targets, self._class_targets(classes))
        if files is None:
            return np.flatnonzero(keep)
        files = [files] if isinstance(files, str) else list(files)
        if any(GLOB_CHARS.search(name) for name in files):
            patterns = re.compile("|".join(f"(?:{fnmatch.translate(name)})" for name in files))
            matched = np.fromiter((bool(patterns.match(name)) for name in self.file_names),
                                  dtype=bool, count=len(self))
            return np.flatnonzero(keep & matched)
        rows = self._rows_of(files)
        return rows[keep[rows]]

    def _class_targets(self, classes: str | Sequence[str]) -> list[int]:
        classes = [classes] if isinstance(classes, str) else list(classes)
        if not self.classes:
            raise UserError(f"{self.path} has no classes (its images were one flat folder): "
                            "select by files instead")
        unknown = [c for c in classes if c not in self.classes]
        if unknown:
            shown = ", ".join(self.classes[:20]) + (", ..." if len(self.classes) > 20 else "")
            raise UserError(f"no class {unknown[0]!r} in {self.path}; its classes: {shown}")
        return [self.classes.index(c) for c in classes]

    def _rows_of(self, files: Sequence[str]) -> np.ndarray:
        if not hasattr(self, "_row_of_file"):
            self._row_of_file = {name: row for row, name in enumerate(self.file_names)}
        unknown = [name for name in files if name not in self._row_of_file]
        if unknown:
            raise UserError(f"no file {unknown[0]!r} in {self.path} (names are relative to the "
                            "image folder, as in store.file_names); use a pattern such as "
                            "'*name*' to search")
        return np.asarray([self._row_of_file[name] for name in files], dtype=np.int64)

    def flat(self, layer: str) -> FlatArray:
        """``layer`` as an (images, units) array that reads only the units asked for.

        Args:
            layer: a module name from ``store.layers``.

        Returns:
            A :class:`FlatArray`; indexing it returns a NumPy array.

        Example:
            >>> store.flat("features.0")[:, 12345]             # doctest: +SKIP
        """
        return FlatArray(self[layer])

    def iter_batches(self, layer: str, batch_size: int, rows: Any = None,
                     flat: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream a layer in batches of rows, for computations that accumulate.

        A ``batch_size`` that is a multiple of the layer's chunk rows reads
        every chunk once.

        Args:
            layer: a module name.
            batch_size: rows per batch.
            rows: the rows to visit, in this order (anything the image axis
                takes; ``store.select(...)``); default every row.
            flat: yield (rows, units) arrays instead of the stored shape.

        Returns:
            An iterator of ``(rows, data)``: the batch's row indices and its
            activations, ``data[i]`` being row ``rows[i]``.

        Raises:
            RowsNotWrittenError: some of ``rows`` are not written (pass
                ``rows=store.written_rows`` to read a store still being written).

        Example:
            >>> total = sum(data.sum(axis=0) for _, data in store.iter_batches("classifier.4", 256))  # doctest: +SKIP
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        array = self.flat(layer) if flat else self[layer]
        rows = np.atleast_1d(np.arange(len(self))[_axis_index(slice(None) if rows is None else rows,
                                                              len(self), 0)])
        check_written(self.written, rows, layer)
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            contiguous = bool(np.all(np.diff(batch) == 1))
            yield batch, array[slice(int(batch[0]), int(batch[-1]) + 1) if contiguous else batch]

    def to_dask(self, layer: str, rows: Any = None, chunks: tuple[int, ...] | None = None) -> "dask.array.Array":
        """``layer`` as a lazy dask array; see :func:`actstore.store.analysis.to_dask`."""
        from .analysis import to_dask
        return to_dask(self, layer, rows=rows, chunks=chunks)

    def to_xarray(self, layers: str | Sequence[str] | None = None,
                  rows: Any = None) -> "xarray.DataArray | xarray.Dataset":
        """Layers as lazy xarray objects; see :func:`actstore.store.analysis.to_xarray`."""
        from .analysis import to_xarray
        return to_xarray(self, layers, rows=rows)

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
                            "shards": _shards(self._reader.array(f"{ACTIVATIONS}/{name}")),
                            "files": self._reader.files_stored(f"{ACTIVATIONS}/{name}"),
                            "bytes_raw": raw, "bytes_stored": stored,
                            "compression_ratio": round(raw / stored, 2) if stored else None}
        damaged = {name: runs for name in self.layers if (runs := self.missing_rows(name))}
        return {"path": str(self.path), "format": self.format, "status": "damaged" if damaged else self.status,
                "damaged": damaged,
                "rows": len(self), "rows_written": int(self.written.sum()),
                "classes": len(self.classes), "layers": layers, "notes": self._reader.notes(),
                "attrs": {k: v for k, v in self.attrs.items() if k != "fingerprint"}}

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.path} format={self.format} rows={len(self)} layers={self.layers} status={self.status}>"


def _shards(handle: Any) -> list[int] | None:
    """A Zarr array's shard shape (files of many chunks), None when unsharded."""
    shards = getattr(handle, "shards", None)
    return list(shards) if shards else None
