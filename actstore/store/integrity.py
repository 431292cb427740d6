"""Checksums of stored chunks, and finding the rows a damaged store has lost.

Every chunk actstore writes carries a checksum of its stored bytes, in the
form each format's own readers check:

- Zarr: the standard ``crc32c`` codec, last in the chunk's codecs (inside a
  shard's inner codecs): CRC-32C of the compressed bytes, appended
  little-endian. zarr-python, tensorstore and zarrita check it.
- HDF5: the Fletcher-32 filter (built into every HDF5) after Blosc or no
  compression; gzip needs none, deflate carries its own Adler-32.

Reads raise :class:`~actstore.errors.CorruptStoreError` naming the layer, the
rows and the file, for a chunk that fails its checksum and for a row recorded
as written whose chunk (or shard) is gone.
"""
from __future__ import annotations

import ctypes
import glob
import os
import warnings
from typing import Any, Callable, Iterator, Sequence

import google_crc32c
import numpy as np

from ..errors import CorruptStoreError


class ChecksumError(ValueError):
    """A chunk's stored checksum differs from its bytes' (raised by decoders)."""


def with_crc32c(payload: bytes) -> bytes:
    """``payload`` and its CRC-32C, as Zarr's ``crc32c`` codec stores a chunk."""
    return payload + google_crc32c.value(payload).to_bytes(4, "little")


def without_crc32c(stored: bytes) -> np.ndarray:
    """The payload of a chunk stored by Zarr's ``crc32c`` codec, once its checksum matches."""
    body = np.frombuffer(stored, dtype=np.uint8)[:-4]   # no copy (google_crc32c takes arrays, not views)
    if len(stored) < 4 or google_crc32c.value(body) != int.from_bytes(stored[-4:], "little"):
        raise ChecksumError("CRC-32C checksum mismatch")
    return body


def _hdf5_fletcher32() -> Callable[[bytes, int], int] | None:
    """HDF5's own ``H5_checksum_fletcher32`` from the library h5py loads, so
    the checksum is HDF5's by construction; None where it is not exported."""
    import h5py
    libs = glob.glob(os.path.join(os.path.dirname(h5py.__file__), os.pardir, "h5py.libs", "libhdf5-*.so*"))
    try:
        lib = ctypes.CDLL(libs[0]) if libs else ctypes.CDLL(None)
        function = lib.H5_checksum_fletcher32
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_char_p, ctypes.c_size_t], ctypes.c_uint32
    return function


def fletcher32_numpy(data: bytes) -> int:
    """HDF5's Fletcher-32 (H5checksum.c, ``H5_checksum_fletcher32``) in NumPy.

    Sums of big-endian 16-bit words (an odd last byte is the high byte of a
    word), each folded as HDF5 folds it: a sum is 0 only when every word is
    0, else its value modulo 65535 in 1..65535. ``sum2`` is the sum of the
    running ``sum1``, i.e. ``sum(w[i] * (n - i))``.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    if len(raw) % 2:
        raw = np.append(raw, np.uint8(0))
    words = raw.view(">u2").astype(np.uint64)
    weights = np.arange(len(words), 0, -1, dtype=np.uint64) % 65535
    sum1, sum2 = int(words.sum()), int((words * weights % 65535).sum())

    def fold(total: int, nonzero: bool) -> int:
        return (total - 1) % 65535 + 1 if nonzero else 0
    nonzero = bool(words.any())
    return (fold(sum2, nonzero) << 16) | fold(sum1, nonzero)


_FLETCHER32 = _hdf5_fletcher32()


def with_fletcher32(payload: bytes) -> bytes:
    """``payload`` and its Fletcher-32, as HDF5's filter appends it (little-endian)."""
    value = _FLETCHER32(payload, len(payload)) if _FLETCHER32 else fletcher32_numpy(payload)
    return payload + int(value).to_bytes(4, "little")


def row_runs(rows: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted rows as ``(first, last)`` runs of consecutive rows.

    Example:
        >>> row_runs([3, 4, 5, 9])
        [(3, 5), (9, 9)]
    """
    runs: list[tuple[int, int]] = []
    for row in (int(r) for r in rows):
        if runs and runs[-1][1] == row - 1:
            runs[-1] = (runs[-1][0], row)
        else:
            runs.append((row, row))
    return runs


def describe_runs(runs: Sequence[tuple[int, int]], limit: int = 5) -> str:
    """``0-15, 32-47 ...``: runs of rows for a message."""
    text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs[:limit])
    return text + (" ..." if len(runs) > limit else "")


def corrupt(layer: str, rows: Sequence[int], where: str, cause: Any) -> CorruptStoreError:
    """The error for rows of ``layer`` whose chunk in ``where`` fails to decode."""
    return CorruptStoreError(f"layer {layer!r} rows {describe_runs(row_runs(rows))} are corrupt "
                             f"({where}: {cause}): rerun the extract command with --repair to recompute "
                             "them, or restore the file")


def lost(layer: str, rows: Sequence[int], where: str) -> CorruptStoreError:
    """The error for written rows of ``layer`` whose stored chunk or shard is gone."""
    return CorruptStoreError(f"layer {layer!r} rows {describe_runs(row_runs(rows))} are recorded as written "
                             f"but their data is gone ({where} missing): run the extract command again "
                             "to recompute them, or restore the file")


def first_bad_block(read: Callable[[np.ndarray], Any], rows: np.ndarray,
                    step: int) -> tuple[np.ndarray, BaseException] | None:
    """After a read of ``rows`` failed: the rows of the first block of
    ``step`` rows that fails on its own, and its error; None when every block
    reads (the failure was not the data's)."""
    for block in np.unique(rows // step):
        part = rows[rows // step == block]
        try:
            read(part)
        except Exception as error:   # what a codec raises on bad bytes varies by codec
            return part, error
    return None


def scan_layer(store, layer: str) -> Iterator[tuple[np.ndarray, np.ndarray | CorruptStoreError]]:
    """Every chunk row of ``layer`` that holds written rows, read (decoded and
    checked): ``(rows, data)``, or ``(rows, error)`` for rows that are lost or
    corrupt. What ``verify`` and ``extract --repair`` walk."""
    array = store[layer]
    step = array.chunks[0]
    for start in range(0, len(store), step):
        rows = np.flatnonzero(store.written[start:start + step]) + start
        if not len(rows):
            continue
        try:
            yield rows, array[rows]
        except CorruptStoreError as error:
            yield rows, error


def damaged_rows(store, decode: bool) -> np.ndarray:
    """The (N,) mask of written rows whose data is gone in some layer (a
    listing: cheap) or, with ``decode``, also fails its checksum or does not
    decode (every chunk read: as long as ``verify``)."""
    mask = np.zeros(len(store), dtype=bool)
    for layer in store.layers:
        if decode:
            for rows, data in scan_layer(store, layer):
                if isinstance(data, CorruptStoreError):
                    mask[rows] = True
        else:
            for first, last in store.missing_rows(layer):
                mask[first:last + 1] = True
    return mask & store.written


def rows_of_blocks(written: np.ndarray, layers) -> np.ndarray:
    """The written rows of the blocks that ``layers`` (``(block rows,
    missing)`` each, ``missing`` giving those of a list of row blocks that
    lack a stored object) have lost."""
    lost = np.zeros(len(written), dtype=bool)
    for step, missing in layers:
        for block in missing(np.unique(np.flatnonzero(written) // step).tolist()):
            lost[block * step:(block + 1) * step] = True
    return lost & written


def unmark_damaged(writer, path, block_rows: int, rows: tuple[int, int], decode: bool) -> np.ndarray:
    """Unmark, and return as a mask, the written rows in ``rows`` (this
    process's ``[lo, hi)``) that a resumed run writes again: every written
    row of each write block (a shard, else a chunk row) in which a stored
    object is gone (the writer's own listing) or, with ``decode``, a chunk
    fails to decode (every chunk read, as :func:`damaged_rows`). A block is
    written whole; unmarked, it is written afresh (a streamed shard adopts
    only marked rows), and a run killed before it is done leaves it to the next."""
    written, damaged = writer.written(), writer.lost_rows()
    if decode:
        from . import open_store  # the package's entry point; its backends import this module
        with open_store(path) as store:
            damaged = damaged | damaged_rows(store, decode=True)
    blocks = np.unique(np.flatnonzero(damaged) // block_rows)
    redo = np.isin(np.arange(len(written)) // block_rows, blocks) & written
    redo[:rows[0]], redo[rows[1]:] = False, False
    if redo.any():
        warnings.warn(f"{path}: {int(damaged.sum())} written row(s) have lost or corrupt data; recomputing "
                      f"the {int(redo.sum())} row(s) of their {len(np.unique(np.flatnonzero(redo) // block_rows))} "
                      "block(s)", stacklevel=2)
        writer.unmark(redo)
    return redo

__all__ = ["ChecksumError", "corrupt", "damaged_rows", "describe_runs", "first_bad_block", "fletcher32_numpy",
           "lost", "row_runs", "rows_of_blocks", "unmark_damaged", "scan_layer", "with_crc32c", "with_fletcher32",
           "without_crc32c"]
