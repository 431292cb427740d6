"""Zarr v3 backend: a directory (or any fsspec URL), one file per chunk.

Zarr's LocalStore writes every key through a temporary file and a rename, so
a killed writer leaves each chunk and each ``zarr.json`` either old or new,
never torn. That, and writing the ``written`` mark after the data, is what
makes a Zarr store resumable after ``kill -9``.

An object store (``s3://``) has no rename: there the store is created in
place, its root attributes first (so other processes see an actstore store
at once) and the ``claims`` group last, which marks the layout complete; a
process that reopens a store still being created waits for that mark.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.errors import ContainsArrayError, ContainsGroupError
from zarr.storage import LocalStore

from ...errors import IncompleteStoreError
from ..codecs import ChunkCompressor, CodecSpec, Encode, whole_chunks
from ..integrity import row_runs, rows_of_blocks
from ..io.location import STORAGE_OPTIONS, Location, filesystem, is_url, join, location
from ..layout import ACTIVATIONS, DERIVED, FORMAT_NAME, LayerSpec, Layout, stored_dim_names
from ..metadata.attributes import NULLABLE, decode, encode
from .base import StoreWriter
from .shard_rows import ShardRows
from .shard_stream import ShardStream, open_shard_stream
from .zarr_integrity import missing_objects
from .zarr_shards import ShardFormat, shard_shape

# One group per shard claim ("I-of-N"): distinct keys, so processes claiming
# at the same moment never overwrite each other.
CLAIMS = "claims"
# Images a writer left out mid-run, one subgroup per writer (its attribute
# ``skipped_images``): concurrent --shard processes never rewrite one
# another's records; readers see them merged into the root attribute.
SKIPPED = "skipped"
# How long a process waits for another one to finish creating a store on an
# object store (tens of small writes: about a second against S3).
CREATE_WAIT_SECONDS = 60.0


def _chunk_encoder(codecs: Sequence) -> Encode | None:
    """Encodes one chunk as an array's ``codecs`` would, or None for a chain
    actstore does not write (zarr then encodes it as usual)."""
    spec = CodecSpec.from_zarr(codecs)
    return spec.encoder("zarr") if spec else None


def _write_file(path: Path, payload: bytes) -> None:
    """Write through a temporary file renamed into place: old or new, never torn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        partial.write_bytes(payload)
        partial.replace(path)
    except BaseException:   # a full disk: leave no stray temporary file
        partial.unlink(missing_ok=True)
        raise


def _open_group(path: Location, mode: str, attributes: Mapping[str, Any] | None = None) -> zarr.Group:
    options = STORAGE_OPTIONS if is_url(path) else None
    # Writers see the store as it is, never the consolidated copy of a finished run.
    return zarr.open_group(str(path), mode=mode, zarr_format=3, storage_options=options,
                           attributes=encode(attributes)[0] if attributes is not None else None,
                           use_consolidated=None if mode == "r" else False)


def _with_skipped(group: zarr.Group) -> dict[str, Any]:
    """The root attributes, with every writer's ``skipped_images`` records
    (the ``skipped`` subgroups, in row order) after the store's own."""
    attrs = decode(dict(group.attrs), NULLABLE)
    try:
        writers = sorted(group[SKIPPED].groups())
    except KeyError:
        return attrs
    records = list(attrs.get("skipped_images") or [])
    found = [r for _, writer in writers for r in decode(dict(writer.attrs)).get("skipped_images") or []]
    records += [r for r in sorted(found, key=lambda r: (r.get("row", -1), r["file_name"])) if r not in records]
    attrs["skipped_images"] = records
    return attrs


def _utf8_rows(names: Sequence[str]) -> np.ndarray:
    """Names as an (N, longest) uint8 array of UTF-8 bytes padded with zeros, for
    readers that decode no strings (tensorstore, zarrs): a file name holds no
    NUL byte, so ``bytes(row).rstrip(b"\0").decode()`` gives it back exactly."""
    encoded = [name.encode() for name in names]
    rows = np.zeros((len(encoded), max(map(len, encoded), default=0)), dtype=np.uint8)
    for row, name in zip(rows, encoded):
        row[:len(name)] = np.frombuffer(name, dtype=np.uint8)
    return rows


class ZarrWriter(StoreWriter):
    format_name = "zarr"
    suffixes = (".zarr",)
    supports_concurrent_writers = True
    supports_urls = True
    supports_shards = True

    @classmethod
    def matches(cls, path: Location) -> bool:
        # The root group's metadata names the format: read it as a file, without opening the store.
        try:
            if is_url(path):
                fs, inner = filesystem(str(join(path, "zarr.json")))
                meta = json.loads(fs.cat_file(inner))
            else:
                meta = json.loads((Path(path) / "zarr.json").read_bytes())
        except (OSError, ValueError):
            return False
        return meta.get("node_type") == "group" and (meta.get("attributes") or {}).get("format") == FORMAT_NAME

    def __init__(self, path: Location, group: zarr.Group) -> None:
        self.path = location(path)
        self._group = group
        self._layers = {name: arr for name, arr in group[ACTIVATIONS].arrays()}
        self._written = group["written"]
        arrays = (*self._layers.values(), self._written)
        self._encoders = {arr.path: _chunk_encoder(arr.metadata.codecs) for arr in arrays}
        self._shards = {arr.path: ShardFormat.of(arr) for arr in arrays}
        self.block_rows = self._written.chunks[0]
        self._compressor = ChunkCompressor()
        # Sharded layers are streamed, fed whole chunk rows (shard_stream.py);
        # zarr writes shards of codecs this writer lacks.
        sharded = [arr for arr in self._layers.values() if arr.shards is not None]
        self._stream = None
        if sharded and all(self._shards[arr.path] for arr in sharded):
            self.stream_rows = math.gcd(*(arr.chunks[0] for arr in sharded))
            self._stream = ShardRows(sharded[0].shards[0], self._written.shape[0], self._open_stream,
                                     marks=lambda first, stop: self._written[first:stop], fallback=self._write_through,
                                     mark=lambda first, m: self._write(self._written, first, m.astype(np.uint8)))
        self._skipped: list[dict[str, Any]] = []          # this writer's records
        self._skipped_key = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"

    @classmethod
    def create(cls, path: Path, layout: Layout, file_names: Sequence[str], targets: Sequence[int],
               classes: Sequence[str], attrs: Mapping[str, Any]) -> "ZarrWriter":
        # Built under a temporary name and renamed into place: readers and other
        # processes see no store or a whole one, never a half-created one.
        # Object stores have no rename: there the store is created in place
        # (see the module docstring), and a process that finds it reopens it.
        path = location(path)
        if is_url(path):
            try:
                return cls(path, cls._create(path, "w-", layout, file_names, targets, classes, attrs))
            except (ContainsGroupError, ContainsArrayError, FileExistsError) as error:
                raise FileExistsError(f"{path} exists") from error
        partial = path.with_name(f".{path.name}.creating-{os.getpid()}")
        cls._create(partial, "w", layout, file_names, targets, classes, attrs)
        try:
            os.rename(partial, path)
        except OSError as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise FileExistsError(f"{path} appeared while the store was being created") from error
        return cls.reopen(path)

    @classmethod
    def _create(cls, path: Location, mode: str, layout: Layout, file_names: Sequence[str],
                targets: Sequence[int], classes: Sequence[str], attrs: Mapping[str, Any]) -> zarr.Group:
        group = _open_group(path, mode, attributes=attrs)
        n = layout.n_rows
        names = group.create_array("file_names", shape=(n,), chunks=(max(n, 1),), dtype=str,
                                   dimension_names=["image"], fill_value="")
        names[:] = np.asarray(file_names, dtype=str)
        group.create_array("targets", shape=(n,), chunks=(max(n, 1),), dtype="int64", fill_value=-1,
                           dimension_names=["image"])[:] = np.asarray(targets, dtype=np.int64)
        kept = group.create_array("classes", shape=(len(classes),), chunks=(max(len(classes), 1),),
                                  dtype=str, dimension_names=["class"], fill_value="")
        if classes:
            kept[:] = np.asarray(classes, dtype=str)
        for name, texts, dim in (("file_names", file_names, "image"), ("classes", classes, "class")):
            utf8 = _utf8_rows(texts)
            group.create_array(f"{name}_utf8", shape=utf8.shape, chunks=(max(len(utf8), 1), max(utf8.shape[1], 1)),
                               dtype="uint8", fill_value=0, dimension_names=[dim, f"{name}_utf8_byte"])[...] = utf8
        # one chunk per write block: a shard's rows are marked in one file
        group.create_array("written", shape=(n,), chunks=(layout.block_rows,), dtype="uint8", fill_value=0,
                           dimension_names=["image"], compressors=None)
        acts = group.create_group(ACTIVATIONS)
        for spec in layout.layers:
            shards = shard_shape((n, *spec.shape), spec.chunks, layout.shard_rows) if layout.shard_rows else None
            arr = acts.create_array(spec.module_name, shape=(n, *spec.shape), chunks=spec.chunks, shards=shards,
                                    dtype=spec.dtype, fill_value=np.nan,   # unwritten rows read NaN
                                    compressors=layout.codec.zarr_compressors(),
                                    dimension_names=list(stored_dim_names(spec.module_name, spec.dims)),
                                    # every chunk is written: skips a scan for all-fill chunks
                                    config={"write_empty_chunks": True})
            arr.attrs.update(encode(spec.attrs())[0])
        group.create_group(CLAIMS)   # last: the layout is complete
        return group

    @classmethod
    def reopen(cls, path: Location) -> "ZarrWriter":
        group = _open_group(path, "r+")
        deadline = time.monotonic() + CREATE_WAIT_SECONDS
        while is_url(path) and CLAIMS not in group:   # another process is still creating it
            if time.monotonic() > deadline:
                raise IncompleteStoreError(f"{path} was left half-created (no {CLAIMS!r} group after "
                                f"{CREATE_WAIT_SECONDS:.0f} s): pass --overwrite to replace it")
            time.sleep(0.2)
            group = _open_group(path, "r+")
        return cls(path, group)

    def write_rows(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Sharded layers: rows are marked written once their shard is in
        place (when its last row arrives, or on :meth:`close`)."""
        if self._stream is not None:
            self._stream.write(start, {name: np.asarray(data, dtype=self._layers[name].dtype)
                                       for name, data in arrays.items()})
            return
        self._write_through(start, arrays)

    def _write_through(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write rows and mark them at once, without streaming shards."""
        stop = start + len(next(iter(arrays.values())))
        blocks = []   # chunks of every layer on a local disk: queued on the pool together, each stored there
        for name, data in arrays.items():
            arr = self._layers[name]
            put = self._local_put(arr)
            if put is not None and self._encoders[arr.path] and whole_chunks(start, stop, arr.chunks[0],
                                                                              arr.shape[0]):
                blocks.append((arr, np.asarray(data, dtype=arr.dtype), start, arr.chunks, self._encoders[arr.path],
                               put))
            else:
                self._write(arr, start, data)
        for _ in self._compressor.iter_blocks(blocks):
            pass
        self._write(self._written, start, np.ones(stop - start, dtype=np.uint8))

    def add_layer(self, spec: LayerSpec) -> None:
        template = next(iter(self._layers.values()))
        n = self._written.shape[0]
        shards = shard_shape((n, *spec.shape), spec.chunks, template.shards[0]) if template.shards else None
        arr = self._group[ACTIVATIONS].create_array(
            spec.module_name, shape=(n, *spec.shape), chunks=spec.chunks, shards=shards, dtype=spec.dtype,
            fill_value=np.nan, compressors=template.compressors, config={"write_empty_chunks": True},
            dimension_names=list(stored_dim_names(spec.module_name, spec.dims)))
        arr.attrs.update(encode(spec.attrs())[0])
        self.update_attrs({"layers": [*(self.root_attrs().get("layers") or []), spec.module_name]})
        self._compressor.close()
        self.__init__(self.path, self._group)   # the new layer's encoders and shard streams with the others'

    def describe_layer(self, name: str, attrs: Mapping[str, Any],
                       derived: Mapping[str, np.ndarray] | None = None) -> None:
        self._layers[name].attrs.update(encode(attrs)[0])
        group = self._group.require_group(DERIVED).require_group(name)
        for key, value in (derived or {}).items():
            group.create_array(key, shape=value.shape, dtype=value.dtype, chunks=value.shape,
                               fill_value=0, overwrite=True)[...] = value

    def _write(self, arr: zarr.Array, start: int, data: np.ndarray) -> None:
        stop, encode = start + len(data), self._encoders[arr.path]
        if encode and whole_chunks(start, stop, arr.chunks[0], arr.shape[0]):
            self._write_chunks(arr, start, np.asarray(data, dtype=arr.dtype), encode)
        else:   # a block that ends inside a chunk, or shards of codecs this writer lacks
            arr[start:stop] = data

    def _open_stream(self, name: str, first: int, start: int, marked: np.ndarray) -> ShardStream | None:
        arr = self._layers[name]
        return open_shard_stream(arr, self._shards[arr.path], self.path, self._compressor, first, start, marked)

    def _write_chunks(self, arr: zarr.Array, start: int, data: np.ndarray, encode: Encode) -> None:
        """Encode a chunk-aligned block on the thread pool and store each chunk
        under its key: on a local disk from the pool itself, the way zarr's
        LocalStore does (a temporary file renamed into place, so a chunk is
        old or new, never torn); elsewhere through the store, all at once."""
        put = self._local_put(arr)
        if put is not None:
            self._compressor.encode_block(data, start, arr.chunks, encode, put)
            return
        self._put(arr, self._compressor.encode_block(data, start, arr.chunks, encode))

    @staticmethod
    def _local_put(arr: zarr.Array) -> Callable[[tuple[int, ...], bytes], None] | None:
        """On a local disk: what stores one encoded chunk of ``arr`` under its
        key from the pool; None elsewhere."""
        store = arr.store_path.store
        if not isinstance(store, LocalStore):
            return None
        folder = Path(store.root) / arr.path

        def put(index: tuple[int, ...], payload: bytes) -> None:
            _write_file(folder / arr.metadata.encode_chunk_key(index), payload)
        return put

    def _put(self, arr: zarr.Array, objects: list[tuple[tuple[int, ...], bytes]]) -> None:
        """Store encoded chunks or shards by grid index: one file renamed into
        place each on a local disk, one PUT each elsewhere."""
        store = arr.store_path.store
        if isinstance(store, LocalStore):
            folder = Path(store.root) / arr.path
            for index, payload in objects:
                _write_file(folder / arr.metadata.encode_chunk_key(index), payload)
            return
        prototype = default_buffer_prototype()

        async def put_all() -> None:
            await asyncio.gather(*(
                (arr.store_path / arr.metadata.encode_chunk_key(index)).set(prototype.buffer.from_bytes(payload))
                for index, payload in objects))
        sync(put_all())

    def written(self) -> np.ndarray:
        return self._written[:].astype(bool)

    def unmark(self, rows: np.ndarray) -> None:
        for first, last in row_runs(np.flatnonzero(rows)):
            self._write(self._written, first, np.zeros(last + 1 - first, dtype=np.uint8))

    def lost_rows(self) -> np.ndarray:
        return rows_of_blocks(self.written(), [(arr.metadata.chunk_grid.chunk_shape[0],
                                                lambda blocks, arr=arr: missing_objects(arr, blocks))
                                               for arr in self._layers.values()])

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        values, removed = encode(attrs, self._group.attrs)
        self._group.attrs.update(values)
        for key in removed:
            if key in self._group.attrs:
                del self._group.attrs[key]

    def root_attrs(self) -> dict[str, Any]:
        return _with_skipped(self._group)

    def add_skipped(self, records: Sequence[Mapping[str, Any]]) -> None:
        self._skipped += [dict(r) for r in records]
        self._group.require_group(SKIPPED).require_group(self._skipped_key).attrs.update(
            encode({"skipped_images": self._skipped})[0])

    def claims(self) -> dict[str, dict[str, Any]]:
        if CLAIMS not in self._group:
            return {}
        return {name: decode(dict(g.attrs)) for name, g in self._group[CLAIMS].groups()}

    def add_claim(self, name: str, attrs: Mapping[str, Any]) -> None:
        claims = self._group.require_group(CLAIMS)
        claims.require_group(name).attrs.update(encode(attrs)[0])

    def remove_claim(self, name: str) -> None:
        del self._group[CLAIMS][name]

    def close(self) -> None:
        try:
            if self._stream is not None:   # the open shard's rows are kept
                self._stream.commit()
        finally:
            self._compressor.close()
        if self.written().all():
            self._consolidate()

    def _consolidate(self) -> None:
        """Write every array's and group's metadata into the root ``zarr.json``,
        so readers open the store with one read (``xr.open_zarr`` without a
        warning, ``zarr.open_consolidated``). Done whenever a run leaves the
        store complete, after its last change to attributes or claims."""
        with warnings.catch_warnings():   # zarr notes that v3 has no consolidation in its spec yet
            warnings.simplefilter("ignore", UserWarning)
            zarr.consolidate_metadata(self._group.store_path.store)

    @classmethod
    def file_count(cls, layout: Layout) -> int:
        # zarr.json of 3 groups, a claim (one process) and 6 + layers arrays;
        # file_names, targets, classes and their utf8 forms one chunk each (a
        # flat folder's empty classes have none); a shard (or chunk) per write block
        blocks = math.ceil(layout.n_rows / layout.block_rows)
        files = 4 + 6 + len(layout.layers) + 5 + blocks
        for spec in layout.layers:
            files += blocks * (1 if layout.shard_rows else
                               math.prod(math.ceil(n / c) for n, c in zip(spec.shape, spec.chunks[1:])))
        return files
