"""The reader: a store's metadata in memory, its activations read lazily.

Analysis code selects rows by class or file name (:meth:`Store.select`),
reads units of a conv layer as columns (:meth:`Store.flat`), streams
(:meth:`Store.iter_batches`) or hands a layer to dask / xarray
(:meth:`Store.to_dask`, :meth:`Store.to_xarray`); none of them reads a chunk
that holds nothing selected.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ...errors import LayerNotFoundError, SelectionError
from ..backends.base import StoreReader
from ..integrity import row_runs
from ..io.location import location
from ..layout import ACTIVATIONS, LayerSpec
from ..metadata.provenance import is_complete, skipped_rows
from .arrays import FlatArray, LazyArray
from .selection import axis_index as _axis_index
from .selection import check_written

if TYPE_CHECKING:  # optional dependencies, imported where used
    import dask.array
    import xarray

GLOB_CHARS = re.compile(r"[*?\[]")


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

    def derived(self, layer: str) -> dict[str, np.ndarray]:
        """Arrays stored with a derived layer (a PCA layer's ``components`` and
        ``mean``); its provenance is in :meth:`layer_attrs`."""
        return self._reader.derived(self._layer_name(layer))

    def __getitem__(self, layer: str) -> LazyArray:
        name = self._layer_name(layer)
        return LazyArray(self._reader, name, self.written, self._specs[name])

    def __contains__(self, layer: str) -> bool:
        return layer in self._specs

    def _layer_name(self, layer: str) -> str:
        if layer not in self._specs:
            close = difflib.get_close_matches(str(layer), self.layers, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise LayerNotFoundError(f"no layer {layer!r} in {self.path}; {hint}layers: {', '.join(self.layers)}")
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
            raise SelectionError(f"{self.path} has no classes (its images were one flat folder): "
                            "select by files instead")
        unknown = [c for c in classes if c not in self.classes]
        if unknown:
            shown = ", ".join(self.classes[:20]) + (", ..." if len(self.classes) > 20 else "")
            raise SelectionError(f"no class {unknown[0]!r} in {self.path}; its classes: {shown}")
        return [self.classes.index(c) for c in classes]

    def _rows_of(self, files: Sequence[str]) -> np.ndarray:
        if not hasattr(self, "_row_of_file"):
            self._row_of_file = {name: row for row, name in enumerate(self.file_names)}
        unknown = [name for name in files if name not in self._row_of_file]
        if unknown:
            raise SelectionError(f"no file {unknown[0]!r} in {self.path} (names are relative to the "
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
        """``layer`` as a lazy dask array; see :func:`actstore.store.read.views.to_dask`."""
        from .views import to_dask
        return to_dask(self, layer, rows=rows, chunks=chunks)

    def to_xarray(self, layers: str | Sequence[str] | None = None,
                  rows: Any = None) -> "xarray.DataArray | xarray.Dataset":
        """Layers as lazy xarray objects; see :func:`actstore.store.read.views.to_xarray`."""
        from .views import to_xarray
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
