"""Stores: one interface, one backend file per format, the format chosen in ``registry`` only.

Example:
    >>> from actstore import open_store
    >>> with open_store("alexnet.zarr") as store:          # doctest: +SKIP
    ...     conv = store["features.0"][:8]                  # reads only the chunks it needs
"""
from __future__ import annotations

from .base import (ACTIVATIONS, COMPRESSIONS, DTYPES, FORMAT_NAME, FORMAT_VERSION, LayerSpec,
                   Layout, StoreReader, StoreWriter, choose_chunks, dim_names)
from .location import Location, exists, is_url, join, location, remove, suffix
from .reader import LazyArray, Store
from .registry import (BACKENDS, DEFAULT_FORMAT, STORE_FORMATS, STORE_SUFFIXES, create_writer,
                       detect_format, is_store, open_reader, open_store, output_format, reader_class,
                       remove_store, reopen_writer, scratch_path, store_format, writer_class)

__all__ = ["ACTIVATIONS", "BACKENDS", "COMPRESSIONS", "DEFAULT_FORMAT", "DTYPES", "FORMAT_NAME",
           "FORMAT_VERSION", "STORE_FORMATS", "STORE_SUFFIXES", "LayerSpec", "Layout", "LazyArray",
           "Location", "Store", "StoreReader", "StoreWriter", "choose_chunks", "create_writer",
           "detect_format", "dim_names", "exists", "is_store", "is_url", "join", "location",
           "open_reader", "open_store", "output_format", "reader_class", "remove", "remove_store",
           "reopen_writer", "scratch_path", "store_format", "suffix", "writer_class"]
