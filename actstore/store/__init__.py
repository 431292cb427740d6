"""Stores: one interface, one backend file per format, the format chosen here only.

Example:
    >>> from actstore import open_store
    >>> with open_store("alexnet.zarr") as store:          # doctest: +SKIP
    ...     conv = store["features.0"][:8]                  # reads only the chunks it needs
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import UserError
from .base import (ACTIVATIONS, COMPRESSIONS, DTYPES, FORMAT_NAME, FORMAT_VERSION, LayerSpec,
                   Layout, StoreReader, StoreWriter, choose_chunks, dim_names)
from .hdf5 import Hdf5Reader, Hdf5Writer
from .location import Location, exists, is_url, join, location, remove, suffix
from . import sharding
from .reader import LazyArray, Store
from .zarr import ZarrReader, ZarrWriter

# The one table of formats: name -> (writer, reader).
BACKENDS: dict[str, tuple[type[StoreWriter], type[StoreReader]]] = {
    "zarr": (ZarrWriter, ZarrReader),
    "hdf5": (Hdf5Writer, Hdf5Reader),
}
DEFAULT_FORMAT = "zarr"
STORE_SUFFIXES = tuple(suffix for writer, _ in BACKENDS.values() for suffix in writer.suffixes)
# The original THINGSvision text/npy layout (actstore.legacy): written, never resumed or read lazily.
LEGACY_FORMATS = ("txt", "npy")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def detect_format(path: str | Path, file_format: str | None = None) -> str:
    """The backend for ``path``: ``file_format`` if given, else what is on
    disk, else the suffix (``.zarr``, ``.h5``, ``.hdf5``), else Zarr."""
    if file_format:
        name = file_format.lower().lstrip(".")
        name = {"h5": "hdf5"}.get(name, name)
        if name not in BACKENDS and name not in LEGACY_FORMATS:
            raise UserError(f"unknown --file-format {file_format!r}: use one of "
                            f"{', '.join([*BACKENDS, *LEGACY_FORMATS])}")
        return name
    path = location(path)
    if is_url(path):
        if exists(join(path, "zarr.json")):
            return "zarr"
    elif path.is_dir() and (path / "zarr.json").is_file():
        return "zarr"
    elif path.is_file():
        with path.open("rb") as handle:
            if handle.read(8) == HDF5_SIGNATURE:
                return "hdf5"
    for name, (writer, _) in BACKENDS.items():
        if suffix(path) in writer.suffixes:
            return name
    return DEFAULT_FORMAT


def is_store(path: str | Path) -> bool:
    """True only for an actstore store (never for another folder or file)."""
    path = location(path)
    if not exists(path):
        return False
    try:
        reader = BACKENDS[detect_format(path)][1](path)
    except Exception:
        return False
    try:
        return reader.root_attrs().get("format") == FORMAT_NAME
    except Exception:
        return False
    finally:
        reader.close()


def remove_store(path: str | Path) -> None:
    """Delete a store, refusing anything that is not an actstore store."""
    path = location(path)
    if not is_store(path):
        raise UserError(f"{path} is not an actstore store: refusing to delete it; "
                        "choose another --out-path")
    remove(path)


def create_writer(path: Location, file_format: str, layout: Layout, file_names: Sequence[str],
                  targets: Sequence[int], classes: Sequence[str], attrs: Mapping[str, Any]) -> StoreWriter:
    if file_format in LEGACY_FORMATS:
        from ..legacy import LegacyWriter
        return LegacyWriter.create(Path(path), layout, file_names, targets, classes,
                                   {**attrs, "file_format": file_format})
    writer = BACKENDS[file_format][0]
    if is_url(path) and not writer.supports_urls:
        raise UserError(f"{file_format} stores must be local files; use a .zarr URL for object storage")
    return writer.create(location(path), layout, file_names, targets, classes, attrs)


def choose_shard_rows(file_format: str, specs: Sequence[LayerSpec], n_rows: int, chunk_images: int,
                      requested: int | None = None) -> int:
    """Rows per shard of a new store (``Layout.shard_rows``): 0 for formats
    without shards; ``requested`` (``--zarr-shard-rows``, 0: unsharded) wins."""
    if file_format not in BACKENDS or not BACKENDS[file_format][0].supports_shards:
        if requested:
            raise UserError(f"--zarr-shard-rows applies to Zarr stores, not {file_format}")
        return 0
    return sharding.choose_shard_rows(specs, n_rows, chunk_images, requested)


def reopen_writer(path: str | Path) -> StoreWriter:
    return BACKENDS[detect_format(path)][0].reopen(location(path))


def writer_class(file_format: str) -> type[StoreWriter]:
    return BACKENDS[file_format][0]


def open_store(path: str | Path) -> Store:
    """Open a store for lazy reading (a context manager).

    Args:
        path: a ``.zarr`` directory or an ``.h5``/``.hdf5`` file written by actstore.

    Returns:
        A :class:`Store`: ``.layers``, ``.file_names``, ``.targets``,
        ``.classes``, ``.attrs``, and ``store[layer]``, a lazy array.

    Raises:
        UserError: the path is missing or is not an actstore store.

    Example:
        >>> with open_store("out/alexnet.zarr") as store:       # doctest: +SKIP
        ...     rows = store["classifier.4"][[3, 1, 2]]          # shape (3, 4096)
    """
    path = location(path)
    if not exists(path):
        raise UserError(f"store {path} does not exist")
    file_format = detect_format(path)
    try:
        reader = BACKENDS[file_format][1](path)
    except Exception as error:
        raise UserError(f"{path} is not a readable {file_format} store ({error})") from error
    if reader.root_attrs().get("format") != FORMAT_NAME:
        reader.close()
        raise UserError(f"{path} is a {file_format} file but not an actstore store")
    return Store(path, reader)


__all__ = ["ACTIVATIONS", "BACKENDS", "COMPRESSIONS", "DTYPES", "FORMAT_NAME", "FORMAT_VERSION", "LEGACY_FORMATS", "STORE_SUFFIXES",
           "LayerSpec", "Layout", "LazyArray", "Location", "exists", "is_url", "location", "Store", "StoreReader", "StoreWriter", "choose_chunks",
           "choose_shard_rows",            "create_writer", "detect_format", "dim_names", "is_store", "open_store", "remove_store",
           "reopen_writer", "writer_class"]
