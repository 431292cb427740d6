"""Compressing a block's chunks on every core, for backends that take
finished chunk bytes (HDF5's ``write_direct_chunk``, a Zarr store's keys).

Both libraries compress through a single lock or a Python-level pipeline
that copies every chunk into a fresh fill-value array first; at the rate a
model produces activations that, not the codec, is the limit. Here each chunk
is cut from the block, made contiguous, padded at the array's edge and
compressed in one task on a thread pool (Blosc and zlib release the GIL).
"""
from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np

from .. import defaults

Encode = Callable[[np.ndarray], bytes]
Put = Callable[[tuple[int, ...], bytes], None]


def whole_chunks(start: int, stop: int, rows: int, n_rows: int) -> bool:
    """Whether rows ``start..stop`` of an ``n_rows`` array chunked by ``rows``
    cover whole chunks (the last one may end at the array's end): the blocks
    :meth:`ChunkCompressor.encode_block` takes."""
    return start % rows == 0 and (stop % rows == 0 or stop == n_rows)


class ChunkCompressor:
    """A thread pool that turns chunk-aligned blocks into encoded chunks."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        # Threads compressing; None: every core the job may use. Read when the
        # pool starts, so a writer's owner can lower it before the first block.
        self.threads: int | None = None

    def encode_block(self, data: np.ndarray, start: int, chunks: tuple[int, ...], encode: Encode,
                     put: Put | None = None) -> list[tuple[tuple[int, ...], bytes]]:
        """``(chunk grid index, encoded bytes)`` for every chunk of ``data``,
        rows ``start..`` of an array chunked as ``chunks``; or, given ``put``,
        nothing: each chunk is handed to ``put`` on the pool as it is encoded.

        ``start`` must be a chunk boundary and ``data`` must end on one or at
        the array's end; chunks at the array's edge are padded with zeros (the
        fill value), as both formats store every chunk whole.
        """
        done = list(self.iter_block(data, start, chunks, encode, put))
        return [] if put is not None else done

    def iter_block(self, data: np.ndarray, start: int, chunks: tuple[int, ...], encode: Encode,
                   put: Put | None = None) -> Iterator[tuple[tuple[int, ...], bytes]]:
        """:meth:`encode_block` as the chunks finish, in C order of the chunk
        grid: every chunk is queued on the pool at once, so the caller
        stores one chunk while the pool still encodes the next ones."""
        if start % chunks[0]:
            raise ValueError(f"block starts at row {start}, inside a chunk of {chunks[0]} rows")
        first = start // chunks[0]
        grid = [range(0, n, c) for n, c in zip(data.shape, chunks)]
        tasks = [((first + offsets[0] // chunks[0],) + tuple(o // c for o, c in zip(offsets[1:], chunks[1:])),
                  offsets, data, chunks, encode, put)
                 for offsets in itertools.product(*grid)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads or defaults.usable_cores(),
                                            thread_name_prefix="actstore-codec")
        for task, payload in zip(tasks, self._pool.map(_encode_one, tasks)):
            yield task[0], payload

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _encode_one(task) -> bytes | None:
    index, offsets, data, chunks, encode, put = task
    piece = data[tuple(slice(o, o + c) for o, c in zip(offsets, chunks))]
    if piece.shape != tuple(chunks):      # the array's edge: pad to a whole chunk
        padded = np.zeros(chunks, dtype=data.dtype)
        padded[tuple(slice(0, n) for n in piece.shape)] = piece
        piece = padded
    payload = encode(np.ascontiguousarray(piece))
    if put is None:
        return payload
    put(index, payload)
    return None
