"""Stores: one interface, one backend file per format, the format chosen in ``registry`` only.

Example:
    >>> from actstore import open_store
    >>> with open_store("alexnet.zarr") as store:          # doctest: +SKIP
    ...     conv = store["features.0"][:8]                  # reads only the chunks it needs
"""
from __future__ import annotations

from pathlib import Path

from ..errors import StoreNotFoundError
from .backends.base import StoreReader, StoreWriter
from .backends.registry import (
    BACKENDS,
    DEFAULT_FORMAT,
    STORE_FORMATS,
    STORE_SUFFIXES,
    choose_shard_rows,
    create_writer,
    default_compression,
    detect_format,
    formats_that,
    is_store,
    open_reader,
    reader_class,
    remove_store,
    reopen_writer,
    repair_store,
    scratch_path,
    stored_bytes,
    suffixes_of,
    writer_class,
)
from .codecs import COMPRESSIONS, CodecSpec, check_level
from .io.location import Location, exists, free_space, is_url, join, location, remove, suffix
from .layout import ACTIVATIONS, DTYPES, FORMAT_NAME, FORMAT_VERSION, LayerSpec, Layout, choose_chunks, dim_names
from .read.arrays import LazyArray
from .read.store import Store


def open_store(path: str | Path) -> Store:
    """Open a store for lazy reading (a context manager).

    Args:
        path: a ``.zarr`` directory or an ``.h5``/``.hdf5`` file written by actstore.

    Returns:
        A :class:`Store`: ``.layers``, ``.file_names``, ``.targets``,
        ``.classes``, ``.attrs``, and ``store[layer]``, a lazy array.

    Raises:
        StoreNotFoundError: the path is missing or is not an actstore store.

    Example:
        >>> with open_store("out/alexnet.zarr") as store:       # doctest: +SKIP
        ...     rows = store["classifier.4"][[3, 1, 2]]          # shape (3, 4096)
    """
    path = location(path)
    if not exists(path):
        raise StoreNotFoundError(f"store {path} does not exist")
    file_format = detect_format(path)
    try:
        reader = reader_class(file_format)(path)
    except Exception as error:
        raise StoreNotFoundError(f"{path} is not a readable {file_format} store ({error})") from error
    if reader.root_attrs().get("format") != FORMAT_NAME:
        reader.close()
        raise StoreNotFoundError(f"{path} is a {file_format} file but not an actstore store")
    return Store(path, reader)

__all__ = ["ACTIVATIONS", "BACKENDS", "COMPRESSIONS", "CodecSpec", "DEFAULT_FORMAT", "DTYPES", "FORMAT_NAME",
           "FORMAT_VERSION", "LayerSpec", "Layout", "LazyArray", "Location", "STORE_FORMATS",
           "STORE_SUFFIXES", "Store", "StoreReader", "StoreWriter", "check_level", "choose_chunks",
           "choose_shard_rows", "create_writer", "default_compression", "detect_format", "dim_names",
           "exists", "formats_that", "free_space", "is_store", "is_url", "join", "location", "open_reader",
           "open_store", "reader_class", "remove", "remove_store", "reopen_writer", "repair_store",
           "scratch_path", "stored_bytes", "suffix", "suffixes_of", "writer_class"]
