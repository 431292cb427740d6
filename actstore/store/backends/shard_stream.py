"""Zarr v3 shards written as streams: each inner chunk is appended to the
shard's file (or upload) as its rows arrive, the index at the end.

A shard's rows need not be in memory at once: the writer is handed whole
chunk rows (or fewer rows, at a gap or a run's end), compresses them on the
thread pool and appends the encoded chunks, in C order of the inner grid, to

- a local file ``<key>.<uuid>.partial``, renamed into place once the index
  is written: readers see no shard or a whole one, never a torn one;
- an object store's multipart upload (fsspec), completed with the index:
  the object exists only once whole.

Rows of a shard are marked ``written`` only once its file is in place (see
:class:`.shard_rows.ShardRows`), so a killed process loses at most its unfinished shard;
its ``.partial`` file is removed when the shard is opened again. A shard
that is already stored (a run that stopped mid-shard) is continued: its
finished chunk rows are copied into the new file and a partly written chunk
row is decoded, so no row is ever lost or written twice.
"""
from __future__ import annotations

import glob
import io
import os
import uuid
import warnings
from pathlib import Path
from typing import Callable, Protocol

import google_crc32c
import numpy as np
from zarr.storage import LocalStore

from ..codecs import ChunkCompressor
from ..io.location import Location, filesystem
from .zarr_shards import MISSING, ShardFormat, read_index

# Part size of an object store's multipart upload: what one open shard of a
# layer holds in memory (S3 allows 10,000 parts: shards up to 160 GB).
UPLOAD_PART_BYTES = 16 * 2**20


class Sink(Protocol):
    def write(self, payload: bytes) -> None: ...
    def commit(self, index: bytes) -> None: ...
    def abort(self) -> None: ...


class FileSink:
    """A shard being written to a local temporary file, renamed into place on commit."""

    def __init__(self, path: Path, index_at_start: bool, index_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in glob.glob(f"{glob.escape(str(path))}.*.partial"):   # a killed writer's unfinished shard
            Path(stale).unlink(missing_ok=True)
        self.path, self.index_at_start = path, index_at_start
        self.partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        self.file = open(self.partial, "wb")
        if index_at_start:    # room for the index, written last
            self.file.write(bytes(index_bytes))

    def write(self, payload: bytes) -> None:
        self.file.write(payload)

    def commit(self, index: bytes) -> None:
        try:
            if self.index_at_start:
                self.file.seek(0)
            self.file.write(index)
            self.file.close()
            os.replace(self.partial, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        try:
            self.file.close()   # may fail to flush (a full disk); the file goes either way
        finally:
            self.partial.unlink(missing_ok=True)


class UploadSink:
    """A shard being uploaded to an object store: a multipart upload that
    exists only once completed (an index at the start is not streamable
    there: such a shard is gathered in memory)."""

    def __init__(self, fs, path: str, index_at_start: bool) -> None:
        self.fs, self.path = fs, path
        abort_stale_uploads(fs, path)
        self.buffer = io.BytesIO() if index_at_start else None
        self.file = None if index_at_start else fs.open(path, "wb", block_size=UPLOAD_PART_BYTES)

    def write(self, payload: bytes) -> None:
        (self.buffer if self.buffer is not None else self.file).write(payload)

    def commit(self, index: bytes) -> None:
        if self.buffer is not None:
            self.fs.pipe_file(self.path, index + self.buffer.getvalue())
            return
        try:
            self.file.write(index)
            self.file.close()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self.file is not None:
            self.file.discard()


_cannot_abort = False   # set once listing or aborting uploads was refused: not tried again


def abort_stale_uploads(fs, path: str) -> int:
    """Abort the multipart uploads of object ``path`` that a killed writer
    left; return how many. S3 keeps (and bills) an upload's parts until it
    is completed or aborted; the writer of a shard is the only one writing
    it (rows are claimed), so any upload of it not its own is stale. Other
    object stores expire unfinished uploads themselves."""
    global _cannot_abort
    if not hasattr(fs, "call_s3") or _cannot_abort:
        return 0
    bucket, key, _ = fs.split_path(path)
    try:
        listing = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
        stale = [upload["UploadId"] for upload in listing.get("Uploads", []) if upload["Key"] == key]
        for upload_id in stale:
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
    except OSError as error:   # e.g. a policy without s3:ListBucketMultipartUploads: writing goes on
        _cannot_abort = True
        warnings.warn(f"unfinished uploads of killed writers cannot be aborted in bucket {bucket} ({error}); "
                      "S3 keeps their parts until a lifecycle rule aborts incomplete multipart uploads")
        return 0
    return len(stale)


class StoredShard(Protocol):
    """Read access to a shard already in place (to continue it)."""
    def size(self) -> int | None: ...
    def read(self, start: int, stop: int) -> bytes: ...


class ShardStream:
    """One array's open shard: rows in, encoded inner chunks out to a sink.

    Chunk rows are final (appended, or left missing) in order; the chunk row
    being filled is held raw in ``tail`` until its last row arrives, a later
    row does, or the shard is committed. Rows never handed in read as the
    array's fill value; rows past the array's end are zeros, as always.
    """

    def __init__(self, fmt: ShardFormat, shape: tuple[int, ...], dtype: np.dtype, fill, first_row: int,
                 compressor: ChunkCompressor, sink: Sink) -> None:
        self.fmt, self.shape, self.dtype, self.fill = fmt, shape, dtype, fill
        self.first_row, self.compressor, self.sink = first_row, compressor, sink
        self.index = np.full((*fmt.chunks_per_shard, 2), MISSING, dtype="<u8")
        self.index_bytes = fmt.index_nbytes
        self.offset = self.index_bytes if fmt.index_at_start else 0
        self.final_rows = 0                      # chunk rows before this are final
        self.tail: np.ndarray | None = None      # the raw rows of chunk row ``final_rows``
        # Blocks to encode, held while several streams gather theirs (see
        # :func:`append_together`); None: each block is encoded at once.
        self.held: list[tuple[int, np.ndarray]] | None = None

    @property
    def rows(self) -> int:
        return self.fmt.inner_chunks[0]

    def append(self, start: int, data: np.ndarray) -> None:
        """Rows ``start..`` of the array (inside this shard), at or after every
        row appended before; whole chunk rows are encoded at once."""
        local = start - self.first_row
        if local // self.rows < self.final_rows:
            raise ValueError(f"row {start} is in a chunk row of the shard that is already written")
        while len(data):
            chunk_row, at = divmod(local, self.rows)
            if self.tail is not None and chunk_row > self.final_rows:   # past the held chunk row
                self._encode_tail()
            self.final_rows = chunk_row
            if at or self.tail is not None:    # into a partly given chunk row
                take = min(len(data), self.rows - at)
                self._fill_tail(local, data[:take])
                data, local = data[take:], local + take
                if local % self.rows == 0 or self._at_end(local):
                    self._encode_tail()
                continue
            count = len(data) if self._at_end(local + len(data)) else len(data) - len(data) % self.rows
            if not count:                      # part of a chunk row: held until the rest arrives
                self._fill_tail(local, data)
                return
            self._append_encoded(self.first_row + local, data[:count])
            data, local = data[count:], local + count

    def commit(self) -> None:
        """Write what is held, then the index; the shard is in place after this."""
        if self.tail is not None:
            self._encode_tail()
        encoded = self.index.tobytes()
        if self.fmt.checksum:
            encoded += np.uint32(google_crc32c.value(encoded)).astype("<u4").tobytes()
        self.sink.commit(encoded)

    def abort(self) -> None:
        self.sink.abort()

    def adopt(self, stored: StoredShard, decode: Callable[[bytes], np.ndarray] | None, start: int,
              marked: np.ndarray) -> bool:
        """Continue the stored shard at row ``start``: copy its chunk rows
        before ``start``'s, decode that one's chunks into ``tail`` where rows
        of it are marked written (``marked``: the shard's rows), and drop
        later ones that hold no marked row. False (nothing changed) when a
        later one does, or a chunk row to decode has no decoder: the caller
        then writes through zarr."""
        size = stored.size()
        if size is None:
            return True
        raw = stored.read(0, self.index_bytes) if self.fmt.index_at_start else \
            stored.read(size - self.index_bytes, size)
        index = read_index(raw, self.fmt.chunks_per_shard, self.fmt.index_at_start, self.fmt.checksum)
        chunk_row = (start - self.first_row) // self.rows
        kept = np.zeros(len(index), dtype=bool)
        kept[:chunk_row] = True
        held = np.pad(marked, (0, len(index) * self.rows - len(marked))).reshape(len(index), -1).any(axis=1)
        kept[chunk_row:] = held[chunk_row:]
        if kept[chunk_row + 1:].any() or (kept[chunk_row] and decode is None):
            return False
        for local in np.ndindex(*index.shape[:-1]):   # C order: chunk rows one after another
            offset, nbytes = (int(v) for v in index[local])
            if offset == MISSING or not kept[local[0]]:
                continue
            payload = stored.read(offset, offset + nbytes)
            if local[0] < chunk_row:
                self._write(local, payload)
                continue
            if self.tail is None:
                self.tail = self._blank_tail(chunk_row)
            box = tuple(slice(i * c, (i + 1) * c) for i, c in zip(local[1:], self.fmt.inner_chunks[1:]))
            region = self.tail[(slice(None), *box)]
            region[...] = decode(payload).reshape(self.fmt.inner_chunks)[tuple(slice(0, n) for n in region.shape)]
        self.final_rows = chunk_row
        return True

    def _at_end(self, local: int) -> bool:
        return local >= self.fmt.shard_shape[0] or self.first_row + local >= self.shape[0]

    def _blank_tail(self, chunk_row: int) -> np.ndarray:
        tail = np.full((self.rows, *self.shape[1:]), self.fill, dtype=self.dtype)
        past_end = self.shape[0] - (self.first_row + chunk_row * self.rows)
        if past_end < self.rows:
            tail[max(past_end, 0):] = 0    # the array's edge is padded with zeros, as a whole chunk is
        return tail

    def _fill_tail(self, local: int, data: np.ndarray) -> None:
        if self.tail is None:
            self.tail = self._blank_tail(local // self.rows)
        at = local % self.rows
        self.tail[at:at + len(data)] = data

    def _encode_tail(self) -> None:
        tail, self.tail = self.tail, None
        self._append_encoded(self.first_row + self.final_rows * self.rows, tail)

    def _append_encoded(self, start: int, data: np.ndarray) -> None:
        if self.held is not None:
            self.held.append((start, data))
        else:
            for index, payload in self.compressor.iter_block(data, start, self.fmt.inner_chunks, self.fmt.encode):
                self.store(index, payload)
        self.final_rows = (start - self.first_row) // self.rows + -(-len(data) // self.rows)

    def store(self, index: tuple[int, ...], payload: bytes) -> None:
        """Append the encoded inner chunk at array chunk ``index``."""
        first = self.first_row // self.rows
        self._write((index[0] - first, *index[1:]), payload)

    def _write(self, local: tuple[int, ...], payload: bytes) -> None:
        self.sink.write(payload)
        self.index[local] = (self.offset, len(payload))
        self.offset += len(payload)


class StoredFile:
    """A shard in place on a local disk, read by byte range."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def size(self) -> int | None:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return None

    def read(self, start: int, stop: int) -> bytes:
        with open(self.path, "rb") as handle:
            return os.pread(handle.fileno(), stop - start, start)


class StoredObject:
    """A shard in place on an object store, read by ranged GETs."""

    def __init__(self, fs, path: str) -> None:
        self.fs, self.path = fs, path

    def size(self) -> int | None:
        try:
            return int(self.fs.size(self.path))
        except FileNotFoundError:
            return None

    def read(self, start: int, stop: int) -> bytes:
        return self.fs.cat_file(self.path, start=start, end=stop)


def open_shard_stream(arr, fmt: ShardFormat, root: Location, compressor: ChunkCompressor, first: int,
                      start: int, marked: np.ndarray) -> ShardStream | None:
    """Zarr array ``arr``'s shard from row ``first``, open to append rows
    from ``start`` (continuing it where it is stored; ``marked``: which of
    its rows are written), in the store at ``root``; None if it cannot be."""
    key = f"{arr.path}/{arr.metadata.encode_chunk_key((first // fmt.shard_shape[0],) + (0,) * (arr.ndim - 1))}"
    store = arr.store_path.store
    if isinstance(store, LocalStore):
        target = Path(store.root) / key
        sink, stored = FileSink(target, fmt.index_at_start, fmt.index_nbytes), StoredFile(target)
    else:
        fs, inner = filesystem(str(root))
        sink, stored = UploadSink(fs, f"{inner}/{key}", fmt.index_at_start), StoredObject(fs, f"{inner}/{key}")
    stream = ShardStream(fmt, arr.shape, arr.dtype, arr.fill_value, first, compressor, sink)
    try:
        adopted = stream.adopt(stored, fmt.decode, start, marked)
    except BaseException:
        stream.abort()
        raise
    if not adopted:
        stream.abort()
        return None
    return stream


__all__ = ["FileSink", "ShardStream", "StoredFile", "StoredObject", "UploadSink", "abort_stale_uploads",
           "open_shard_stream"]
