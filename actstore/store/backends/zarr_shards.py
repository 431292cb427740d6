"""Zarr v3 shards: many inner chunks in one file or object.

A shard (the ``sharding_indexed`` codec) is the inner chunks' encoded bytes
one after another and an index of ``(offset, nbytes)`` per inner chunk, in C
order of the inner chunk grid, ``2**64 - 1`` twice for a chunk not stored,
encoded by the index codecs (little-endian bytes, then a CRC32C checksum)
and placed at the start or end of the shard
(https://zarr-specs.readthedocs.io/en/latest/v3/codecs/sharding-indexed/).
Readers (actstore's, zarr-python, tensorstore) read the index and then only
the inner chunks a selection needs.

zarr-python can write shards, but slowly (it re-encodes a shard per
partial update). actstore writes a shard once, as a stream
(:mod:`.shard_stream`): inner chunks are compressed on the existing thread
pool as their rows arrive and appended to a temporary file renamed into
place with its index (old or new, never torn), or to a multipart upload.
Only one process ever writes a shard: ``--shard I/N`` ranges, resume and
rechunk blocks are aligned to shard rows.
"""
from __future__ import annotations

import asyncio
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import google_crc32c
import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from ... import config
from ...errors import BadOptionError
from ..codecs import CodecSpec, Decode, Encode, decoding_pool
from ..integrity import corrupt

# An inner chunk that is not in the shard: offset and nbytes both this.
MISSING = 2**64 - 1
# Gap between two needed inner chunks of one shard below which an object
# store read fetches both in one ranged GET (and the gap with them).
COALESCE_BYTES = 2**20


def choose_shard_rows(n_rows: int, chunk_images: int, requested: int | None = None,
                      max_rows: int = config.SHARD_ROWS) -> int:
    """Rows per shard of a store: 0 for unsharded.

    ``requested`` (``--zarr-shard-rows``) wins when given; it must be 0 or a
    multiple of ``chunk_images``. Otherwise: ``max_rows`` rounded down to
    whole chunks (at least one chunk row), no more than the store needs. The
    same for every layer, whatever its width: shards are written as streams
    (:mod:`.shard_stream`), so a shard never has to fit in memory.

    Example:
        >>> choose_shard_rows(1_281_167, 16)
        4096
        >>> choose_shard_rows(42, 4)
        44
    """
    if requested is not None:
        if requested < 0 or requested % chunk_images:
            raise BadOptionError(f"--zarr-shard-rows must be 0 (unsharded) or a multiple of --chunk-images "
                                 f"({chunk_images}), got {requested}")
        return requested
    rows = max(chunk_images, max_rows - max_rows % chunk_images)
    return min(rows, math.ceil(max(n_rows, 1) / chunk_images) * chunk_images)


def shard_shape(shape: Sequence[int], chunks: Sequence[int], shard_rows: int) -> tuple[int, ...]:
    """A shard of ``shard_rows`` rows holding every other extent of an array
    of ``shape`` (rounded up to whole inner ``chunks``, as Zarr requires)."""
    return (shard_rows, *(math.ceil(n / c) * c for n, c in zip(shape[1:], chunks[1:])))


@dataclass(frozen=True)
class ShardFormat:
    """How one array's shards are laid out and encoded, from its codec metadata."""

    inner_chunks: tuple[int, ...]
    shard_shape: tuple[int, ...]
    encode: Encode                  # one inner chunk
    decode: Decode                  # one inner chunk, to a flat array
    index_at_start: bool
    checksum: bool

    @property
    def chunks_per_shard(self) -> tuple[int, ...]:
        return tuple(s // c for s, c in zip(self.shard_shape, self.inner_chunks))

    @classmethod
    def of(cls, arr) -> "ShardFormat | None":
        """The format of zarr array ``arr``, or None when it is not sharded or
        uses codecs this writer does not produce (zarr then writes it)."""
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
        codecs = arr.metadata.codecs
        if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
            return None
        sharding = codecs[0]
        index = sharding.index_codecs
        if not index or not isinstance(index[0], BytesCodec) or len(index) > 2 \
                or (len(index) == 2 and not isinstance(index[1], Crc32cCodec)) \
                or (index[0].endian is not None and index[0].endian.value != "little"):
            return None
        codec = CodecSpec.from_zarr(sharding.codecs)
        if codec is None:
            return None
        return cls(inner_chunks=tuple(sharding.chunk_shape), shard_shape=tuple(arr.metadata.chunk_grid.chunk_shape),
                   encode=codec.encoder("zarr"), decode=codec.decoder(arr.dtype),
                   index_at_start=sharding.index_location.value == "start", checksum=len(index) == 2)

    @property
    def index_nbytes(self) -> int:
        """Bytes of the encoded index: 16 per inner chunk, and its CRC32C."""
        return math.prod(self.chunks_per_shard) * 16 + (4 if self.checksum else 0)


def _compact(positions: np.ndarray) -> slice | np.ndarray:
    """A run of consecutive positions as a slice (a view, not a fancy-index copy)."""
    if len(positions) and positions[-1] - positions[0] == len(positions) - 1 \
            and (len(positions) < 3 or np.all(np.diff(positions) == 1)):
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def _block_index(parts: list) -> tuple:
    """An index of the block ``parts`` (slices or arrays, one per axis): plain
    slices where every part is one, else an open mesh."""
    if all(isinstance(part, slice) for part in parts):
        return tuple(parts)
    return np.ix_(*(np.arange(part.start, part.stop) if isinstance(part, slice) else part for part in parts))


def read_index(shard: bytes, chunks_per_shard: Sequence[int], index_at_start: bool = False,
               checksum: bool = True) -> np.ndarray:
    """The ``(*chunks_per_shard, 2)`` offsets and sizes of a stored shard,
    checking its CRC32C: what a reader does first."""
    size = math.prod(chunks_per_shard) * 16 + (4 if checksum else 0)
    raw = shard[:size] if index_at_start else shard[-size:]
    if checksum:
        body, stored = raw[:-4], int.from_bytes(raw[-4:], "little")
        if google_crc32c.value(body) != stored:
            raise ValueError("shard index checksum mismatch")
        raw = body
    return np.frombuffer(raw, dtype="<u8").reshape(*chunks_per_shard, 2)


class ShardReader:
    """Orthogonal reads of one sharded array: only the inner chunks a
    selection needs, each shard's index read once per reader (and its
    checksum checked), the chunks decoded in parallel on a thread pool.

    zarr-python reads partial shards too, but decodes one shard's inner
    chunks one after another; this reads ranges of the same bytes and
    decodes them as an unsharded array's chunks are decoded.
    """

    def __init__(self, arr, shards: ShardFormat) -> None:
        self.arr, self.shards, self.decode = arr, shards, shards.decode
        self.shape = tuple(arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.fill = np.asarray(arr.fill_value, dtype=self.dtype)
        self._indices: dict[tuple[int, ...], np.ndarray] = {}
        store = arr.store_path.store
        self._folder = Path(store.root) / arr.path if isinstance(store, LocalStore) else None

    def read(self, selection: tuple) -> np.ndarray:
        """``arr.oindex[selection]`` for ints, step-1 slices and sorted int arrays."""
        inner = self.shards.inner_chunks
        axes = [np.arange(n)[k] if isinstance(k, slice) else np.atleast_1d(np.asarray(k, dtype=np.int64))
                for k, n in zip(selection, self.shape)]
        out = np.empty([len(a) for a in axes], dtype=self.dtype)
        groups = []   # per axis: [(chunk id, positions in out, offsets in chunk)]
        for index, size in zip(axes, inner):
            ids = index // size
            cuts = np.flatnonzero(np.diff(ids)) + 1
            groups.append([(int(ids[p[0]]), _compact(p), _compact(index[p] - ids[p[0]] * size))
                           for p in np.split(np.arange(len(index)), cuts) if len(p)])
        wanted = list(itertools.product(*groups))
        ranges = self._locate([tuple(g[0] for g in chunk) for chunk in wanted])
        pool = decoding_pool()

        def place(chunk, payload) -> None:
            target = _block_index([g[1] for g in chunk])
            if payload is None:
                out[target] = self.fill
            else:
                try:
                    values = self.decode(payload).reshape(inner)
                except Exception as error:   # a checksum, or a codec refusing damaged bytes
                    shard = tuple(g[0] // p for g, p in zip(chunk, self.shards.chunks_per_shard))
                    raise corrupt(self._layer, axes[0][chunk[0][1]], f"shard {self._where(shard)}",
                                  error) from error
                out[target] = values[_block_index([g[2] for g in chunk])]
        if self._folder is not None:
            # Local files: each task reads its byte range (pread) and decodes
            # it, so reads from a cold or network disk overlap as well.
            files: dict[tuple[int, ...], int] = {}
            try:
                for shard in dict.fromkeys(r[0] for r in ranges if r is not None):
                    files[shard] = os.open(self._folder / self._key(shard), os.O_RDONLY)
                list(pool.map(lambda item: place(item[0], None if item[1] is None else
                                                 os.pread(files[item[1][0]], item[1][2], item[1][1])),
                              zip(wanted, ranges)))
            finally:
                for fd in files.values():
                    os.close(fd)
        else:
            list(pool.map(lambda item: place(*item), zip(wanted, self._get_ranges(ranges))))
        return out.reshape([len(a) for k, a in zip(selection, axes) if not isinstance(k, (int, np.integer))])

    def _locate(self, chunks: list[tuple[int, ...]]) -> list[tuple[tuple[int, ...], int, int] | None]:
        """``(shard, offset, nbytes)`` of each inner chunk, None where not stored;
        the indexes of shards not seen yet are read first, all at once."""
        per_shard = self.shards.chunks_per_shard
        of_chunk = [tuple(c // p for c, p in zip(chunk, per_shard)) for chunk in chunks]
        self._load_indices([shard for shard in dict.fromkeys(of_chunk) if shard not in self._indices])
        ranges = []
        for chunk, shard in zip(chunks, of_chunk):
            offset, size = (int(v) for v in self._indices[shard][tuple(c % p for c, p in zip(chunk, per_shard))])
            ranges.append(None if offset == MISSING else (shard, offset, size))
        return ranges

    def _key(self, shard: tuple[int, ...]) -> str:
        return self.arr.metadata.encode_chunk_key(shard)

    def _load_indices(self, shards: list[tuple[int, ...]]) -> None:
        """Read the indexes of ``shards``: on an object store all requests at
        once, since rows spread over a big store touch hundreds of shards and
        their index reads must not queue one behind another (a local read of
        a 4 KB index takes microseconds; threads did not pay there)."""
        if not shards:
            return
        per_shard = self.shards.chunks_per_shard
        size = math.prod(per_shard) * 16 + (4 if self.shards.checksum else 0)
        if self._folder is not None:
            raws = [self._read_local_index(shard, size) for shard in shards]
        else:
            from zarr.abc.store import RangeByteRequest, SuffixByteRequest
            request = RangeByteRequest(0, size) if self.shards.index_at_start else SuffixByteRequest(size)
            prototype = default_buffer_prototype()

            async def get_all():
                return await asyncio.gather(*((self.arr.store_path / self._key(shard)).get(prototype, request)
                                              for shard in shards))
            raws = [None if buffer is None else buffer.to_bytes() for buffer in sync(get_all())]
        for shard, raw in zip(shards, raws):
            try:
                self._indices[shard] = (np.full((*per_shard, 2), MISSING, dtype="<u8") if raw is None else
                                        read_index(raw, per_shard, self.shards.index_at_start,
                                                   self.shards.checksum))
            except ValueError as error:
                rows = self.shards.shard_shape[0]
                raise corrupt(self._layer, range(shard[0] * rows, min((shard[0] + 1) * rows, self.shape[0])),
                              f"index of shard {self._where(shard)}", error) from error

    @property
    def _layer(self) -> str:
        return self.arr.path.rsplit("/", 1)[-1]

    def _where(self, shard: tuple[int, ...]) -> str:
        """The shard's file (or object key), for messages."""
        return str(self._folder / self._key(shard)) if self._folder else f"{self.arr.path}/{self._key(shard)}"

    def _read_local_index(self, shard: tuple[int, ...], size: int) -> bytes | None:
        try:
            with open(self._folder / self._key(shard), "rb") as handle:
                if not self.shards.index_at_start:   # a truncated file: its index fails its checksum
                    handle.seek(max(0, os.fstat(handle.fileno()).st_size - size))
                return handle.read(size)
        except FileNotFoundError:
            return None

    def _get_ranges(self, ranges: list) -> list[bytes | None]:
        # An object store: ranges of one shard that touch or nearly touch
        # (within COALESCE_BYTES) become one ranged GET, so reading most of
        # a shard costs a request or two, not one per inner chunk.
        from zarr.abc.store import RangeByteRequest
        prototype = default_buffer_prototype()
        spans: list[list] = []    # [shard, start, stop, [positions]]
        for position, item in sorted(((p, r) for p, r in enumerate(ranges) if r is not None),
                                     key=lambda pr: (pr[1][0], pr[1][1])):
            shard, offset, size = item
            if spans and spans[-1][0] == shard and offset <= spans[-1][2] + COALESCE_BYTES:
                spans[-1][2] = max(spans[-1][2], offset + size)
                spans[-1][3].append(position)
            else:
                spans.append([shard, offset, offset + size, [position]])

        async def get_all():
            return await asyncio.gather(*(
                (self.arr.store_path / self._key(shard)).get(prototype, RangeByteRequest(start, stop))
                for shard, start, stop, _ in spans))
        out: list[bytes | None] = [None] * len(ranges)
        for (_, start, _, positions), buffer in zip(spans, sync(get_all())):
            data = buffer.to_bytes()
            for position in positions:
                _, offset, size = ranges[position]
                out[position] = data[offset - start:offset - start + size]
        return out

    def close(self) -> None:
        """Nothing to release: the decoding threads are the process's (codecs.decoding_pool)."""


__all__ = ["MISSING", "ShardFormat", "ShardReader", "choose_shard_rows", "read_index",
           "shard_shape"]
