"""The codec: one :class:`CodecSpec` (name, level), how each format spells it, and one thread pool.

Every chunk actstore stores is compressed here, by the same code whichever
backend stores it: Blosc (zstd or lz4, byte shuffle, one block per chunk) or
deflate (Zarr's gzip codec; HDF5's shuffle filter then zlib), or nothing.
:class:`CodecSpec` gives a codec's Zarr spelling (:meth:`~CodecSpec.zarr_compressors`)
and HDF5 spelling (:meth:`~CodecSpec.hdf5_filters`), reads either back from a
stored array (:meth:`~CodecSpec.from_zarr`, :meth:`~CodecSpec.from_hdf5`) and
encodes and decodes chunks exactly as that spelling does.

:class:`ChunkCompressor` is the thread pool. Both libraries compress through
a single lock or a Python-level pipeline that copies every chunk into a fresh
fill-value array first; at the rate a model produces activations that, not the
codec, is the limit. Here each chunk is cut from the block, made contiguous,
padded at the array's edge and compressed in one task on the pool (Blosc and
the deflates release the GIL), and the backends store the finished bytes (HDF5's
``write_direct_chunk``, a Zarr store's keys).
"""
from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import numcodecs
import numpy as np

from .. import config
from ..errors import BadOptionError
from . import deflate
from .integrity import with_crc32c, with_fletcher32, without_crc32c

COMPRESSIONS = ("zstd", "lz4", "gzip", "none")
BLOSC = ("zstd", "lz4")
# Each codec's levels: Blosc's clevel (zstd, lz4) and zlib's level (gzip).
LEVEL_RANGES = {"zstd": (0, 9), "lz4": (0, 9), "gzip": (0, 9)}
# Each codec's level when --compression-level is not given. zstd 1: on
# activations 2.3-2.6x faster than level 3 for a ratio only 1-2% lower. lz4 5:
# its library's usual middle level. gzip 1: levels 1-3 are ISA-L's
# (store/deflate.py). On AlexNet's activations (shuffle + deflate, one core)
# ISA-L's level 1 is as fast as its level 0 at a 15-18% better ratio, as fast
# as or faster than level 2 (1.0-1.4x) at the same ratio, and 1.1-2.7x faster
# than level 3, which stores no less. Against zlib's level 1 (the default
# before) it is 7-11x faster and stores 1-4% less on ReLU layers, 2% more on a
# linear one (benchmarks/bench_codecs.py; docs/performance.md, "Storage at GPU rates").
DEFAULT_LEVELS = {"zstd": 1, "lz4": 5, "gzip": 1}
# Blosc block size: a whole chunk (up to this) is one block. On activations
# that is ~1.5x faster to compress, ~1.7x faster to decompress and a slightly
# better ratio than Blosc's automatic 32-64 KiB blocks (benchmarks/bench_writer.py).
BLOSC_BLOCK_BYTES = 2**20
# HDF5's registered filter id of Blosc (hdf5plugin), and the compressor codes
# of hdf5-blosc that actstore writes.
HDF5_BLOSC_FILTER = "32001"
HDF5_BLOSC_CODES = {1: "lz4", 5: "zstd"}

Encode = Callable[[np.ndarray], bytes]
Decode = Callable[[bytes], np.ndarray]


@dataclass(frozen=True)
class CodecSpec:
    """A codec by name (``zstd``, ``lz4``, ``gzip``, ``none``) and level (None: its default).

    Example:
        >>> CodecSpec("gzip").stored_level, CodecSpec("none").stored_level
        (1, None)
    """

    name: str
    level: int | None = None
    # Blosc's typesize as a Zarr array records it (None: the chunk's itemsize)
    typesize: int | None = None
    # A checksum after the codec (.integrity): Zarr's crc32c codec, HDF5's
    # Fletcher-32 filter (not after gzip: deflate carries Adler-32). New
    # arrays have one; arrays written before checksums read back without.
    checksum: bool = True

    def __post_init__(self) -> None:
        if self.name not in COMPRESSIONS:
            raise BadOptionError(f"unknown --compression {self.name!r}: use one of {', '.join(COMPRESSIONS)}")
        if self.level is not None:
            check_level(self.name, self.level)

    @property
    def stored_level(self) -> int | None:
        """The level chunks are written with (None for ``none``)."""
        if self.name == "none":
            return None
        return DEFAULT_LEVELS[self.name] if self.level is None else self.level

    def zarr_compressors(self) -> tuple:
        """The Zarr v3 bytes-to-bytes codecs of this codec, then its checksum."""
        from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec
        checksum = (Crc32cCodec(),) if self.checksum else ()
        if self.name in BLOSC:
            return (BloscCodec(cname=self.name, clevel=self.stored_level, shuffle="shuffle",
                               blocksize=BLOSC_BLOCK_BYTES), *checksum)
        if self.name == "gzip":
            return (GzipCodec(level=self.stored_level), *checksum)
        return checksum

    def hdf5_filters(self) -> dict[str, Any]:
        """h5py ``create_dataset`` keywords of this codec's HDF5 filter pipeline
        (h5py puts Fletcher-32 last, after the compressor)."""
        checksum = {"fletcher32": True} if self.checksum else {}
        if self.name in BLOSC:
            import hdf5plugin
            return {**hdf5plugin.Blosc(cname=self.name, clevel=self.stored_level,
                                       shuffle=hdf5plugin.Blosc.SHUFFLE), **checksum}
        if self.name == "gzip":
            return {"compression": "gzip", "compression_opts": self.stored_level, "shuffle": True}
        return checksum

    @classmethod
    def from_zarr(cls, codecs: Sequence) -> "CodecSpec | None":
        """The codec of a Zarr array's (or a shard's inner) codec chain as
        actstore writes it (little-endian bytes, then Blosc, gzip or nothing,
        then crc32c or nothing); None for any other chain, which zarr then
        encodes itself."""
        from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec
        if codecs and isinstance(codecs[-1], Crc32cCodec):
            spec = cls.from_zarr(codecs[:-1])
            return spec and replace(spec, checksum=True)
        if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
            return None
        if codecs[0].endian is not None and codecs[0].endian.value != "little":
            return None
        if len(codecs) == 1:
            return cls("none", checksum=False)
        codec = codecs[1]
        if isinstance(codec, BloscCodec) and codec.cname.value in BLOSC and codec.shuffle.value == "shuffle" \
                and codec.blocksize == BLOSC_BLOCK_BYTES:
            return cls(codec.cname.value, codec.clevel, typesize=codec.typesize, checksum=False)
        if isinstance(codec, GzipCodec):
            return cls("gzip", codec.level, checksum=False)
        return None

    @classmethod
    def from_hdf5(cls, filters: Mapping[str, Any]) -> "CodecSpec | None":
        """The codec of an HDF5 dataset's filter pipeline (h5py's ``_filters``)
        as actstore writes it; None for any other pipeline."""
        filters = dict(filters)
        checksum = filters.pop("fletcher32", False) is not False
        if not filters:
            return cls("none", checksum=checksum)
        if set(filters) == {"shuffle", "gzip"}:
            return cls("gzip", int(filters["gzip"]), checksum=checksum)
        if set(filters) == {HDF5_BLOSC_FILTER}:
            values = filters[HDF5_BLOSC_FILTER]
            if len(values) >= 7 and values[5] == 1 and values[6] in HDF5_BLOSC_CODES:
                return cls(HDF5_BLOSC_CODES[values[6]], int(values[4]), checksum=checksum)
        return None

    def encoder(self, framing: str) -> Encode:
        """Encodes one C-contiguous chunk as a ``framing`` (``zarr`` or ``hdf5``)
        reader decodes it, checksum included (see :meth:`_compressor`)."""
        compress = self._compressor(framing)
        if not self.checksum or (framing == "hdf5" and self.name == "gzip"):
            return compress
        append = with_crc32c if framing == "zarr" else with_fletcher32
        return lambda chunk: append(compress(chunk))

    def _compressor(self, framing: str) -> Encode:
        """Compresses one chunk for ``framing``: the same Blosc bytes in both;
        for gzip, Zarr's gzip stream or HDF5's byte shuffle then zlib stream."""
        if self.name in BLOSC:
            blosc = numcodecs.Blosc(cname=self.name, clevel=self.stored_level, shuffle=numcodecs.Blosc.SHUFFLE,
                                    blocksize=BLOSC_BLOCK_BYTES, typesize=self.typesize)
            return lambda chunk: bytes(blosc.encode(chunk))
        if self.name == "gzip" and framing == "hdf5":
            level = self.stored_level

            def shuffled_deflate(chunk: np.ndarray) -> bytes:   # HDF5's pipeline: shuffle, then deflate
                return deflate.zlib_stream(byte_shuffle(chunk), level)
            return shuffled_deflate
        if self.name == "gzip":   # a gzip member as numcodecs.GZip writes, by the fastest deflate
            level = self.stored_level
            return lambda chunk: deflate.gzip_member(chunk, level)
        return lambda chunk: chunk.tobytes()

    def decoder(self, dtype: np.dtype) -> Decode:
        """Decodes one Zarr chunk of this codec into a flat array of ``dtype``
        (HDF5 chunks are decoded by HDF5's own filters)."""
        stored = np.dtype(dtype).newbyteorder("<")
        if self.checksum:   # a mismatch raises integrity.ChecksumError
            decode = replace(self, checksum=False).decoder(dtype)
            return lambda payload: decode(without_crc32c(payload))
        if self.name == "none":
            return lambda payload: np.frombuffer(payload, dtype=stored)
        codec = numcodecs.Blosc() if self.name in BLOSC else numcodecs.GZip()
        return lambda payload: np.frombuffer(codec.decode(payload), dtype=stored)


def byte_shuffle(chunk: np.ndarray) -> np.ndarray:
    """HDF5's shuffle filter: byte ``j`` of every element, then byte ``j + 1``
    (``numcodecs.Shuffle``'s output). A NumPy transpose: several times faster
    than numcodecs' loop here, and it lets go of the GIL while it copies."""
    flat = np.ascontiguousarray(chunk).reshape(-1)
    return np.ascontiguousarray(flat.view(np.uint8).reshape(flat.size, flat.dtype.itemsize).T)


def check_level(name: str | None, level: int) -> None:
    """Refuse a ``--compression-level`` out of the codec's range (``name``
    None: the default codec, whichever it is: every one takes 0-9)."""
    if name == "none":
        raise BadOptionError(f"--compression-level {level} has no meaning with --compression none: leave it out")
    low, high = LEVEL_RANGES.get(name, (0, 9))
    if not low <= level <= high:
        raise BadOptionError(f"--compression-level {level} is out of range for {name or 'every codec'}: "
                             f"use {low} to {high}")


Put = Callable[[tuple[int, ...], bytes], None]


def whole_chunks(start: int, stop: int, rows: int, n_rows: int) -> bool:
    """Whether rows ``start..stop`` of an ``n_rows`` array chunked by ``rows``
    cover whole chunks (the last one may end at the array's end): the blocks
    :meth:`ChunkCompressor.encode_block` takes."""
    return start % rows == 0 and (stop % rows == 0 or stop == n_rows)


_decoding: ThreadPoolExecutor | None = None
_decoding_lock = threading.Lock()


def decoding_pool() -> ThreadPoolExecutor:
    """The threads that decode chunks for reads, one pool for the process (every
    reader shares it; Blosc and zlib release the GIL), started on first use."""
    global _decoding
    with _decoding_lock:
        if _decoding is None:
            _decoding = ThreadPoolExecutor(max_workers=config.usable_cores(), thread_name_prefix="actstore-decode")
        return _decoding


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
        for _, index, payload in self.iter_blocks([(None, data, start, chunks, encode, put)]):
            yield index, payload

    def iter_blocks(self, blocks: Sequence[tuple[Any, np.ndarray, int, tuple[int, ...], Encode, Put | None]]
                    ) -> Iterator[tuple[Any, tuple[int, ...], bytes]]:
        """``(key, chunk grid index, encoded bytes)`` for the chunks of several
        blocks ``(key, data, start, chunks, encode, put)`` (one per layer), in
        order, all queued at once: the pool never runs dry between layers
        while the caller stores what is done."""
        tasks = []
        for key, data, start, chunks, encode, put in blocks:
            if start % chunks[0]:
                raise ValueError(f"block starts at row {start}, inside a chunk of {chunks[0]} rows")
            first = start // chunks[0]
            grid = [range(0, n, c) for n, c in zip(data.shape, chunks)]
            tasks += [(key, (first + offsets[0] // chunks[0],) + tuple(o // c for o, c in zip(offsets[1:], chunks[1:])),
                       offsets, data, chunks, encode, put)
                      for offsets in itertools.product(*grid)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads or config.usable_cores(),
                                            thread_name_prefix="actstore-codec")
        for task, payload in zip(tasks, self._pool.map(_encode_one, tasks)):
            yield task[0], task[1], payload

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _encode_one(task) -> bytes | None:
    _, index, offsets, data, chunks, encode, put = task
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
