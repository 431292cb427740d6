"""The one table of formats, and everything that picks or opens a backend by format.

Each format is a writer class (with its capabilities as class attributes) and,
for readable stores, a reader class. Nothing outside this package branches on
a format name or a suffix: it asks here.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from ...errors import BadOptionError, StoreConflictError, StoreNotFoundError
from ..codecs import COMPRESSIONS
from ..io.location import Location, exists, is_url, location, remove, suffix
from ..layout import ACTIVATIONS, LayerSpec, Layout
from . import zarr_shards as sharding
from .base import StoreReader, StoreWriter
from .hdf5 import Hdf5Writer
from .hdf5_reader import Hdf5Reader
from .zarr import ZarrWriter
from .zarr_reader import ZarrReader

# name -> (writer, reader)
BACKENDS: dict[str, tuple[type[StoreWriter], type[StoreReader]]] = {
    "zarr": (ZarrWriter, ZarrReader),
    "hdf5": (Hdf5Writer, Hdf5Reader),
}
DEFAULT_FORMAT = "zarr"
STORE_FORMATS = tuple(BACKENDS)
STORE_SUFFIXES = tuple(s for name in STORE_FORMATS for s in BACKENDS[name][0].suffixes)
# A format users may name as another (``--file-format h5``).
ALIASES = {"h5": "hdf5"}


def detect_format(path: str | Path, file_format: str | None = None) -> str:
    """The backend for ``path``: ``file_format`` if given, else what is on
    disk, else the suffix (``.zarr``, ``.h5``, ``.hdf5``), else Zarr."""
    if file_format:
        name = file_format.lower().lstrip(".")
        name = ALIASES.get(name, name)
        if name not in BACKENDS:
            raise BadOptionError(f"unknown --file-format {file_format!r}: use one of {', '.join(BACKENDS)}")
        return name
    path = location(path)
    for name, (writer, _) in BACKENDS.items():
        if writer.matches(path):
            return name
    for name in STORE_FORMATS:
        if suffix(path) in BACKENDS[name][0].suffixes:
            return name
    return DEFAULT_FORMAT


def formats_that(capability: str) -> list[str]:
    """The store formats whose writers have ``capability`` (a class attribute), e.g.
    ``supports_resume``: for messages that name what to use instead."""
    return [name for name in STORE_FORMATS if getattr(BACKENDS[name][0], capability)]


def suffixes_of(formats: Sequence[str]) -> str:
    """``".zarr or .h5"``: the out-path suffixes of ``formats``, for messages."""
    return " or ".join(BACKENDS[name][0].suffixes[0] for name in formats)


def writer_class(file_format: str) -> type[StoreWriter]:
    return BACKENDS[file_format][0]


def reader_class(file_format: str) -> type[StoreReader]:
    return BACKENDS[file_format][1]


def open_reader(path: Location) -> StoreReader:
    """The backend reader of the store at ``path`` (raises what the backend raises)."""
    return reader_class(detect_format(path))(location(path))


def stored_bytes(file_format: str, layout: Layout, arrays: Mapping[str, Any]) -> dict[str, int]:
    """Per layer, the bytes ``arrays`` (rows of every layer of ``layout``) take
    once stored in ``file_format`` with the layout's codec and chunks, measured
    by writing them to a scratch store."""
    with tempfile.TemporaryDirectory(prefix="actstore-sample-") as scratch:
        path = scratch_path(Path(scratch), file_format)
        n = layout.n_rows
        writer = create_writer(path, file_format, layout, [""] * n, [0] * n, [],
                               {"format": "actstore-sample", "model_name": "sample"})
        try:
            for start in range(0, n, layout.chunk_images):
                writer.write_rows(start, {k: v[start:start + layout.chunk_images] for k, v in arrays.items()})
        finally:
            writer.close()
        reader = open_reader(path)
        try:
            return {spec.module_name: reader.chunk_stats(f"{ACTIVATIONS}/{spec.module_name}")[0]
                    for spec in layout.layers}
        finally:
            reader.close()


def scratch_path(folder: Path, file_format: str) -> Path:
    """A path in ``folder`` for a scratch store of ``file_format``."""
    suffixes = writer_class(file_format).suffixes
    return folder / f"sample{suffixes[0] if suffixes else ''}"


def format_at(path: str | Path) -> str | None:
    """The format of the actstore store at ``path``, None where there is none
    (another folder or file, or nothing); opens no store."""
    path = location(path)
    if not exists(path):
        return None
    return next((name for name, (writer, _) in BACKENDS.items() if writer.matches(path)), None)


def is_store(path: str | Path) -> bool:
    """True only for an actstore store (never for another folder or file); opens nothing."""
    return format_at(path) is not None


def remove_store(path: str | Path) -> None:
    """Delete a store, refusing anything that is not an actstore store."""
    path = location(path)
    if not is_store(path):
        raise StoreConflictError(f"{path} is not an actstore store: refusing to delete it; "
                                 "choose another --out-path")
    remove(path)


def create_writer(path: Location, file_format: str, layout: Layout, file_names: Sequence[str],
                  targets: Sequence[int], classes: Sequence[str], attrs: Mapping[str, Any]) -> StoreWriter:
    """Create a new store (or output folder) of ``file_format`` at ``path``; its
    root attributes record the layers' order (``layers``) for every reader."""
    writer = writer_class(file_format)
    if is_url(path) and not writer.supports_urls:
        raise BadOptionError(f"{file_format} stores must be local files; use a .zarr URL for object storage")
    return writer.create(location(path), layout, file_names, targets, classes,
                         {**attrs, "layers": [spec.module_name for spec in layout.layers]})


def reopen_writer(path: str | Path) -> StoreWriter:
    return writer_class(detect_format(path)).reopen(location(path))


def default_compression(path: Location, file_format: str, resume: bool = True) -> str:
    """The codec when none is asked for: the one the store at ``path`` has, so
    rerunning a command resumes its store even across a change of default
    (HDF5's was zstd before gzip), else the format's (its writer's
    ``default_compression``)."""
    if resume and file_format in STORE_FORMATS and is_store(path):
        reader = open_reader(path)
        try:
            stored = reader.root_attrs().get("compression")
        finally:
            reader.close()
        if stored in COMPRESSIONS:
            return stored
    return writer_class(file_format).default_compression


def repair_store(path: str | Path) -> list[str]:
    """Clear what a killed writer left that keeps readers other than actstore
    out (an HDF5 file's "open for write" flag), without touching data.

    Returns:
        What was done, one line each; empty when nothing needed it.
    """
    path = location(path)
    if not exists(path):
        raise StoreNotFoundError(f"store {path} does not exist")
    return writer_class(detect_format(path)).repair(path)


def choose_shard_rows(file_format: str, specs: Sequence[LayerSpec], n_rows: int, chunk_images: int,
                      requested: int | None = None) -> int:
    """Rows per shard of a new store (``Layout.shard_rows``): 0 for formats
    without shards; ``requested`` (``--zarr-shard-rows``, 0: unsharded) wins.
    ``specs`` do not change it: shards are streamed, whatever a layer's width."""
    if not writer_class(file_format).supports_shards:
        if requested:
            usable = " or ".join(name.capitalize() for name in formats_that("supports_shards"))
            raise BadOptionError(f"--zarr-shard-rows applies to {usable} stores, not {file_format}")
        return 0
    return sharding.choose_shard_rows(n_rows, chunk_images, requested)
