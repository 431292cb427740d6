"""Copy a store into another chunk layout, one block of rows at a time.

Extraction writes image-major chunks (a few images, all or many channels):
fast for "these 64 images, every unit". An analysis that reads mostly along
units (one channel over every image, unit tuning, encoding models fit per
unit) wants unit-major chunks: many images, one channel or a few units.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import config
from ..errors import BadOptionError, IncompleteStoreError
from .backends.registry import choose_shard_rows, default_compression, detect_format
from .io.location import Location, identity, location
from .layout import LayerSpec, Layout, choose_chunks
from .metadata.provenance import fingerprint_sha256, is_complete, now, skipped_rows
from .read.store import Store
from .session import open_session

LAYOUTS = ("unit-major", "image-major")
# Memory the copy may hold: a block of rows of every layer, read and then
# compressed. The default suits a laptop; a larger budget means fewer,
# larger unit-major chunks along images.
MAX_MEMORY = 1 * 2**30


@dataclass
class RechunkResult:
    """Where the copy is, its chunks per layer, and what the copy took."""

    path: Location
    file_format: str
    layout: str
    rows: int
    chunks: dict[str, tuple[int, ...]]
    block_rows: int
    shard_rows: int      # rows per Zarr shard; 0: one file per chunk
    seconds: float
    skipped: int = 0     # rows of images skipped as unreadable: unwritten NaN rows in the copy, or dropped
    dropped_skipped: bool = False


def unit_major_chunks(shape: tuple[int, ...], itemsize: int, rows: int,
                      chunk_channels: int | None = None) -> tuple[int, ...]:
    """Chunks of ``rows`` images and as many channels (units) as fit in
    ``config.CHUNK_BYTES``, at least one: reading one channel then reads
    ``N / rows`` chunks holding little else, and a linear layer's chunks are
    not a few kilobytes each."""
    rest = math.prod(shape[1:]) * itemsize
    fit = max(1, config.CHUNK_BYTES // max(1, rows * rest))
    first = max(1, min(shape[0], chunk_channels or fit))
    return (rows, first, *shape[1:])


def rechunk(src: str | Path, out: str | Path, layout: str = "unit-major", *,
            chunk_images: int | None = None, chunk_channels: int | None = None,
            shard_rows: int | None = None, max_memory: int = MAX_MEMORY,
            file_format: str | None = None, overwrite: bool = False,
            drop_skipped: bool = False) -> RechunkResult:
    """Copy the complete store ``src`` to ``out`` with new chunks, in bounded memory.

    Rows are copied in blocks of whole output shards (or chunks), so memory
    stays near ``max_memory`` whatever the store's size. The copy keeps the
    values, row metadata and provenance; its ``fingerprint`` records the new
    chunks and ``rechunked_from`` the source. Rows of images skipped as
    unreadable stay unwritten (NaN) rows with the same ``skipped_images``
    records, so the copy is complete as the source is; ``drop_skipped``
    leaves them out (rows, file names and targets).

    Args:
        layout: ``unit-major`` (many images, one channel or a few units per
            chunk) or ``image-major`` (what ``extract`` writes).
        chunk_images: rows per chunk [unit-major: as many as ``max_memory``
            allows; image-major: ``config.CHUNK_IMAGES``].
        chunk_channels: channels (units) per chunk [default: from ``config.CHUNK_BYTES``].
        shard_rows: rows per Zarr shard, a multiple of the chunk rows; 0 writes
            one file per chunk [default: as ``extract`` chooses, within ``max_memory``].
        file_format: ``zarr`` or ``hdf5`` [default: from ``out``'s suffix].

    Raises:
        UserError: unknown layout, incomplete source, ``out`` exists, or a
            budget too small for one chunk row of every layer.

    Example:
        >>> rechunk("alexnet.zarr", "alexnet-units.zarr", "unit-major")      # doctest: +SKIP
    """
    started = time.perf_counter()
    _check_options(layout, chunk_images, chunk_channels)
    from . import open_store  # the package's entry point, defined after this module's siblings
    src, out = location(src), location(out)   # local paths or URLs (s3://...)
    file_format = detect_format(out, file_format)
    with open_store(src) as store:
        if not is_complete(store.written, store.skipped):
            raise IncompleteStoreError(f"{src} is not complete ({len(store.written_rows)}/{len(store)} "
                                       "rows): run its extract command again to finish it first")
        keep = np.flatnonzero(~store.skipped) if drop_skipped else np.arange(len(store))
        n_rows = len(keep)
        new_layout, block = _plan(store, n_rows, layout, file_format, out, chunk_images, chunk_channels, shard_rows,
                                  max_memory)
        new_specs, rows, shard = new_layout.layers, new_layout.chunk_images, new_layout.shard_rows
        attrs = _attrs(store, new_specs, rows, src, keep if drop_skipped else None)
        with open_session(out, file_format, new_layout, store.file_names[keep], store.targets[keep], store.classes,
                          attrs, overwrite=overwrite, rerun_complete=False) as session:
            done = session.written() | skipped_rows(attrs, n_rows)
            for start in range(0, n_rows, block):
                stop = min(start + block, n_rows)
                if not done[start:stop].all():   # a resumed copy skips what it holds
                    _copy_rows(store, session.writer, keep, start, stop, done)
            session.complete()
    return RechunkResult(path=out, file_format=file_format, layout=layout, rows=n_rows,
                         chunks={s.module_name: s.chunks for s in new_specs}, block_rows=block, shard_rows=shard,
                         seconds=time.perf_counter() - started, skipped=int(store.skipped.sum()),
                         dropped_skipped=drop_skipped)


def _check_options(layout: str, chunk_images: int | None, chunk_channels: int | None) -> None:
    if layout not in LAYOUTS:
        raise BadOptionError(f"unknown --layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    for option, value in (("--chunk-images", chunk_images), ("--chunk-channels", chunk_channels)):
        if value is not None and value < 1:
            raise BadOptionError(f"{option} must be at least 1, got {value}")


def _plan(store: Store, n_rows: int, layout: str, file_format: str, out: Location, chunk_images: int | None,
          chunk_channels: int | None, shard_rows: int | None, max_memory: int) -> tuple[Layout, int]:
    """The copy's layout (chunks, shards, codec) and the rows it copies at once:
    whole shards (each written once, whole) that fit ``max_memory``."""
    rows, fit_rows = _chunk_rows(store, layout, chunk_images, max_memory)
    new_specs = tuple(_respec(store.spec(name), layout, rows, chunk_channels) for name in store.layers)
    shard = choose_shard_rows(file_format, new_specs, n_rows, rows, shard_rows)
    if shard_rows is None and shard > fit_rows:
        shard = max(rows, fit_rows - fit_rows % rows)
    if fit_rows < shard:
        raise BadOptionError(f"--max-memory-mb {max_memory / 2**20:,.0f} holds {fit_rows} rows of every "
                             f"layer, fewer than one shard of {shard} rows: raise it or lower --zarr-shard-rows")
    unit = shard or rows
    block = min(unit * max(1, fit_rows // unit), max(unit, n_rows))
    compression = store.attrs.get("compression", default_compression(out, file_format, resume=False))
    return Layout(n_rows=n_rows, layers=new_specs, chunk_images=rows, shard_rows=shard, compression=compression,
                  compression_level=store.attrs.get("compression_level")), block


def _copy_rows(store: Store, writer, keep: np.ndarray, start: int, stop: int, done: np.ndarray) -> None:
    """Copy rows ``start:stop`` of the copy (rows ``keep[start:stop]`` of
    ``store``), in runs between the rows left unwritten (skipped images):
    a run whole, as one write, when nothing in it is skipped."""
    todo = np.flatnonzero(~done[start:stop]) + start
    for run in np.split(todo, np.flatnonzero(np.diff(todo) != 1) + 1):
        source = keep[run[0]:run[-1] + 1]
        rows = slice(int(source[0]), int(source[-1]) + 1) if source[-1] - source[0] == len(source) - 1 else source
        writer.write_rows(int(run[0]), {name: store[name][rows] for name in store.layers})


def _chunk_rows(store: Store, layout: str, chunk_images: int | None, max_memory: int) -> tuple[int, int]:
    """Rows per output chunk, and how many rows fit ``max_memory`` at once
    (counting the block read and its compressed copy)."""
    row_bytes = sum(store.spec(name).bytes_per_image for name in store.layers)
    fit_rows = max_memory // (2 * row_bytes)
    if layout == "unit-major":
        source_rows = store.spec(store.layers[0]).chunks[0]   # blocks aligned to source chunks read each once
        rows = chunk_images or max(1, min(len(store), fit_rows))
        rows = rows - rows % source_rows if not chunk_images and rows > source_rows else rows
    else:
        rows = chunk_images or config.CHUNK_IMAGES
    if fit_rows < rows:
        raise BadOptionError(f"--max-memory-mb {max_memory / 2**20:,.0f} holds {fit_rows} rows of every "
                             f"layer, fewer than one chunk of {rows} rows: raise it or lower --chunk-images")
    return rows, fit_rows


def _respec(spec: LayerSpec, layout: str, rows: int, chunk_channels: int | None) -> LayerSpec:
    itemsize = spec.bytes_per_image // max(1, math.prod(spec.shape))
    if layout == "unit-major":
        chunks = unit_major_chunks(spec.shape, itemsize, rows, chunk_channels)
    else:
        chunks = choose_chunks(spec.shape, itemsize, rows, chunk_channels)
    return replace(spec, chunks=chunks)


def _attrs(store, specs: tuple[LayerSpec, ...], rows: int, src: Location, kept: np.ndarray | None) -> dict:
    """The copy's root attributes; ``kept``: the source rows it keeps, when
    skipped images are dropped (their records then name no row)."""
    attrs = dict(store.attrs)
    fingerprint = {**attrs.get("fingerprint", {}), "chunks": {s.module_name: list(s.chunks) for s in specs}}
    if kept is not None:
        fingerprint.update(n_images=len(kept), dropped_skipped=True)
        attrs.update(n_images=len(kept), skipped_images=[{k: v for k, v in record.items() if k != "row"}
                                                         for record in attrs.get("skipped_images") or []])
    attrs.pop("completed", None)   # the copy's own time is set when it completes
    attrs.update(status="incomplete", chunk_images=rows, fingerprint=fingerprint,
                 fingerprint_sha256=fingerprint_sha256(fingerprint), rechunked_from=identity(src),
                 rechunked=now())
    return attrs
