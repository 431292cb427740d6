"""Zarr v3 shards written whole: many inner chunks in one file or object.

A shard (the ``sharding_indexed`` codec) is the inner chunks' encoded bytes
one after another and an index of ``(offset, nbytes)`` per inner chunk, in C
order of the inner chunk grid, ``2**64 - 1`` twice for a chunk not stored,
encoded by the index codecs (little-endian bytes, then a CRC32C checksum)
and placed at the start or end of the shard
(https://zarr-specs.readthedocs.io/en/latest/v3/codecs/sharding-indexed/).
Readers (actstore's, zarr-python, tensorstore) read the index and then only
the inner chunks a selection needs.

zarr-python can write shards, but slowly (it re-encodes a shard per
partial update). actstore writes a shard once, whole: its rows are gathered
first (the row buffer holds one shard), the inner chunks are compressed on
the existing thread pool, and the shard is stored as one file renamed into
place (old or new, never torn) or one PUT to an object store. Only one
process ever writes a shard: every split of rows (the row buffer, ``--shard
I/N`` ranges, resume, rechunk blocks) is aligned to shard rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import google_crc32c
import numpy as np

from .. import defaults
from ..errors import UserError
from .base import LayerSpec
from .chunks import ChunkCompressor, Encode

# An inner chunk that is not in the shard: offset and nbytes both this.
MISSING = 2**64 - 1


def choose_shard_rows(specs: Sequence[LayerSpec], n_rows: int, chunk_images: int,
                      requested: int | None = None, buffer_bytes: int = defaults.SHARD_BUFFER_BYTES,
                      max_rows: int = defaults.SHARD_ROWS) -> int:
    """Rows per shard for a store of ``specs``: 0 for unsharded.

    ``requested`` (``--zarr-shard-rows``) wins when given; it must be 0 or a
    multiple of ``chunk_images``. Otherwise: at most ``max_rows``, as many
    whole chunks as fit one row buffer of ``buffer_bytes`` (all layers
    together), at least one chunk row, and no more than the store needs.

    Example:
        >>> spec = LayerSpec("fc", (512,), (512,), "float32", (16, 512))
        >>> choose_shard_rows([spec], 1_281_167, 16)
        4096
    """
    if requested is not None:
        if requested < 0 or requested % chunk_images:
            raise UserError(f"--zarr-shard-rows must be 0 (unsharded) or a multiple of --chunk-images "
                            f"({chunk_images}), got {requested}")
        return requested
    row_bytes = max(1, sum(spec.bytes_per_image for spec in specs))
    rows = min(max_rows, buffer_bytes // row_bytes)
    rows = max(chunk_images, rows - rows % chunk_images)
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
    index_at_start: bool
    checksum: bool

    @property
    def chunks_per_shard(self) -> tuple[int, ...]:
        return tuple(s // c for s, c in zip(self.shard_shape, self.inner_chunks))

    @classmethod
    def of(cls, arr, chunk_encoder: Callable[[Sequence], Encode | None]) -> "ShardFormat | None":
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
        encode = chunk_encoder(sharding.codecs)
        if encode is None:
            return None
        return cls(inner_chunks=tuple(sharding.chunk_shape), shard_shape=tuple(arr.metadata.chunk_grid.chunk_shape),
                   encode=encode, index_at_start=sharding.index_location.value == "start",
                   checksum=len(index) == 2)

    def encode_block(self, compressor: ChunkCompressor, data: np.ndarray,
                     start: int) -> list[tuple[tuple[int, ...], bytes]]:
        """``(shard grid index, shard bytes)`` for rows ``start..`` of the array.

        ``start`` must be a shard boundary. Every shard but the last is whole;
        the last holds the inner chunks of the rows given (its last one padded
        with the fill value, zeros) and marks the rest missing, which readers
        read as the fill value: a run interrupted mid-shard, or the array's end.
        """
        rows = self.shard_shape[0]
        if start % rows:
            raise ValueError(f"block starts at row {start}, inside a shard of {rows} rows")
        per_shard = self.chunks_per_shard
        by_shard: dict[int, list[tuple[tuple[int, ...], bytes]]] = {}
        for index, payload in compressor.encode_block(data, start, self.inner_chunks, self.encode):
            by_shard.setdefault(index[0] // per_shard[0], []).append(
                ((index[0] % per_shard[0], *index[1:]), payload))
        return [((shard, *(0,) * (len(per_shard) - 1)), self._assemble(chunks))
                for shard, chunks in sorted(by_shard.items())]

    def _assemble(self, chunks: list[tuple[tuple[int, ...], bytes]]) -> bytes:
        chunks.sort()   # C order of the inner grid: a row range is one contiguous byte range
        index = np.full((*self.chunks_per_shard, 2), MISSING, dtype="<u8")
        index_size = index.nbytes + (4 if self.checksum else 0)
        offset = index_size if self.index_at_start else 0
        for local, payload in chunks:
            index[local] = (offset, len(payload))
            offset += len(payload)
        encoded = index.tobytes()
        if self.checksum:
            encoded += np.uint32(google_crc32c.value(encoded)).astype("<u4").tobytes()
        payloads = b"".join(payload for _, payload in chunks)
        return encoded + payloads if self.index_at_start else payloads + encoded


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


__all__ = ["MISSING", "ShardFormat", "choose_shard_rows", "read_index", "shard_shape"]
