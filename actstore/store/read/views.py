"""A store's layers as dask arrays and xarray objects, for analysis code that
should not know how the store is laid out.

dask and xarray are optional (``pip install 'actstore[analysis]'``) and are
imported here only, when first used. A dask array reads the store by path, so
it survives the ``with open_store(...)`` block and can be sent to other
processes; each dask chunk spans a whole number of store chunks (along
images too when every row is kept), and a block reads only its own rows. A
block whose chunk or shard is gone raises, as ``store[layer]`` does: never
NaN for lost data.
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ...errors import MissingPackageError
from ..io.location import identity, location
from ..layout import stored_dim_names
from .arrays import normalise, read_layer
from .selection import axis_index, check_written

if TYPE_CHECKING:
    import dask.array
    import xarray

    from .store import Store

# Target size of one dask chunk: dask's own default is 128 MiB; half of it
# keeps a threaded reduction on a laptop at a few hundred MB.
DASK_CHUNK_BYTES = 64 * 2**20


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingPackageError(f"{module} is not installed: pip install 'actstore[analysis]'") from error


class _LayerSource:
    """What dask reads blocks from: one layer of the store at ``path`` (of
    ``n_rows`` rows), seen through ``rows`` (the store rows of its rows, in
    order; None: every row), opened on first read in each process (it
    pickles as the path only). A block reads only its own rows, and raises
    where their chunk or shard is gone, as ``store[layer]`` does."""

    def __init__(self, path: Path, layer: str, n_rows: int, rows: np.ndarray | None,
                 unit_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.layer, self.n_rows, self.rows = location(path), layer, n_rows, rows
        self.shape = (n_rows if rows is None else len(rows), *unit_shape)
        self.dtype, self.ndim = dtype, len(self.shape)
        self._reader = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}

    def __getitem__(self, key: tuple) -> np.ndarray:
        if self._reader is None:
            from ..backends.registry import open_reader
            self._reader = open_reader(self.path)
        if self.rows is not None:
            key = (self.rows[key[0]], *key[1:])
        selection, post = normalise(key, (self.n_rows, *self.shape[1:]))
        return post(read_layer(self._reader, self.layer, self.n_rows, selection))


def to_dask(store: "Store", layer: str, rows: Any = None,
            chunks: tuple[int, ...] | None = None) -> "dask.array.Array":
    """One layer as a lazy dask array, chunked along the store's own chunks.

    Nothing is read until ``.compute()``; a reduction then holds a few dask
    chunks per worker, whatever the size of the layer.

    Args:
        store: an open :class:`~actstore.store.read.store.Store`.
        layer: a module name from ``store.layers``.
        rows: rows to keep, in this order (anything the image axis takes,
            e.g. ``store.select(classes=["dog"])``); default every row.
        chunks: dask chunks; default whole store chunks, grouped along images
            (the rows kept, in order) to about :data:`DASK_CHUNK_BYTES`.

    Returns:
        A ``dask.array.Array`` of shape ``(len(rows), *per-image shape)``.

    Raises:
        UserError: dask is not installed.
        RowsNotWrittenError: some selected rows are not written yet (pass
            ``rows=store.written_rows`` while a store is being written).
        CorruptStoreError: on compute, a block's rows are written but their
            chunk or shard is gone.

    Example:
        >>> x = store.to_dask("classifier.4")                      # doctest: +SKIP
        >>> x.mean(axis=0).compute()                               # (4096,)
    """
    da = _require("dask.array")
    array = store[layer]
    selected = axis_index(slice(None) if rows is None else rows, len(store), 0)
    check_written(store.written, selected, layer)
    picked = None if rows is None else np.atleast_1d(np.arange(len(store))[selected])
    source = _LayerSource(store.path, layer, len(store), picked, array.shape[1:], array.dtype)
    if chunks is None:
        store_chunks = array.chunks
        chunk_bytes = math.prod(store_chunks) * array.dtype.itemsize
        per_dask_chunk = max(1, DASK_CHUNK_BYTES // max(1, chunk_bytes))
        chunks = (min(source.shape[0], store_chunks[0] * per_dask_chunk) or 1, *store_chunks[1:])
    name = "actstore-" + da.core.tokenize(identity(store.path), layer, store.written, picked)
    lazy = da.from_array(source, chunks=chunks, name=name, asarray=True, fancy=False, lock=False,
                         meta=np.empty((0,) * array.ndim, dtype=array.dtype))
    return lazy[0] if isinstance(selected, int) else lazy


def to_xarray(store: "Store", layers: str | Sequence[str] | None = None,
              rows: Any = None) -> "xarray.DataArray | xarray.Dataset":
    """Layers as lazy xarray objects with named dimensions and image coordinates.

    One layer (a str) gives a ``DataArray`` with dims ``image, channel,
    height, width`` (conv), ``image, unit`` (linear or flattened) or
    ``image, token, unit``. Several layers (a list, or None for all) give a
    ``Dataset`` whose non-image dims are qualified by the layer
    (``features.0:channel``), exactly as ``xarray.open_zarr(path,
    group="activations")`` names them, since ``channel`` has a different size
    in each layer. Coordinates along ``image``: ``image`` (the row number),
    ``file_name``, ``target`` and, when the images had classes, ``class_name``.

    Args:
        store: an open :class:`~actstore.store.read.store.Store`.
        layers: one module name, several, or None for every layer.
        rows: rows to keep, in this order (as in :func:`to_dask`).

    Returns:
        An ``xarray.DataArray`` (one layer) or ``xarray.Dataset``, dask-backed.

    Raises:
        UserError: xarray or dask is not installed.
        RowsNotWrittenError: some selected rows are not written yet.

    Example:
        >>> acts = store.to_xarray("features.0")                   # doctest: +SKIP
        >>> acts.groupby("class_name").mean().compute()            # per-class mean maps
    """
    xr = _require("xarray")
    selected = np.atleast_1d(np.arange(len(store))[axis_index(slice(None) if rows is None else rows,
                                                               len(store), 0)])
    coords = {"image": ("image", selected), "file_name": ("image", store.file_names[selected]),
              "target": ("image", store.targets[selected])}
    if store.classes:
        coords["class_name"] = ("image", store.class_names[selected])
    attrs = {key: store.attrs[key] for key in ("model_name", "weights") if store.attrs.get(key) is not None}
    attrs["store"] = str(store.path)
    row_key = None if rows is None else selected

    if isinstance(layers, str):
        data = to_dask(store, layers, rows=row_key)
        return xr.DataArray(data, dims=store.spec(layers).dims, coords=coords, name=layers,
                            attrs={**attrs, "module_name": layers})
    names = store.layers if layers is None else list(layers)
    variables = {name: (stored_dim_names(name, store.spec(name).dims), to_dask(store, name, rows=row_key))
                 for name in names}
    return xr.Dataset(variables, coords=coords, attrs=attrs)
