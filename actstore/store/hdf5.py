"""HDF5 backend: one file, chunked datasets, the same layout as Zarr.

The file is written in SWMR mode (single writer, multiple readers): readers
may open it while rows are being added and see a consistent file, and a
writer killed at any moment leaves a file whose flushed rows are intact. The
only damage a kill leaves is the superblock's "open for write" flag, which
:func:`_open_rw` clears on resume (what ``h5clear -s`` does) once the writer
lock (:mod:`.lock`) proves the writer that set it is dead. Rows are marked
in ``written`` only after the data is flushed. The file is built under a
temporary name and renamed into place once it is complete and in SWMR mode.

What other readers see: the file format of HDF5 1.10 (:data:`LIBVER`, the
oldest that has SWMR), so HDF5 1.10 and 1.14 (MATLAB, R, Julia, h5dump,
netCDF-C) open it; netCDF dimension scales (``image`` at the root, shared by
the row arrays and every layer; ``<layer>:channel`` and the like next to the
layers), so xarray and ``ncdump`` name every axis; NaN in float rows never
written. The default codec, gzip (deflate with shuffle), is built into every
HDF5. Blosc (``--compression zstd|lz4``) is an HDF5 filter plugin:
``import hdf5plugin`` makes it readable from h5py, and
``HDF5_PLUGIN_PATH=$(python -c 'import hdf5plugin; print(hdf5plugin.PLUGIN_PATH)')``
from h5dump, MATLAB, R and other HDF5 tools.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import h5py
import hdf5plugin
import numcodecs
import numpy as np

from .. import defaults
from ..errors import OutOfSpaceError, UserError, is_disk_full
from . import lock
from .attributes import NULLABLE, decode, encode
from .base import ACTIVATIONS, Layout, StoreReader, StoreWriter, layer_order, stored_dim_names
from .chunks import ChunkCompressor, whole_chunks
from .integrity import corrupt, first_bad_block, with_fletcher32
from .location import free_space

# The file format's version bounds: 1.10's format (the first with SWMR, which
# the crash safety rests on) up to 1.14's. HDF5 2.0's "latest" writes layout
# messages that HDF5 1.x cannot read.
LIBVER = ("v110", "v114")
DIMENSION_SCALE_ATTRS = ("DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME")   # HDF5's own, not ours
# What netCDF writes into a dimension scale that is only a dimension (no coordinate values).
NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."
# How long a writer waits for other processes to close the file (a reader
# polling progress holds it for moments).
LOCK_WAIT_SECONDS = 30.0


def _filters(compression: str, level: int | None) -> dict[str, Any]:
    """A layer's filters; Fletcher-32 after any but deflate, which carries its own Adler-32."""
    level = defaults.COMPRESSION_LEVELS.get(compression) if level is None else level
    if compression in ("zstd", "lz4"):
        blosc = hdf5plugin.Blosc(cname=compression, clevel=level, shuffle=hdf5plugin.Blosc.SHUFFLE)
        return {**blosc, "fletcher32": True}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level, "shuffle": True}
    return {"fletcher32": True}


def _set_attrs(node: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    values, removed = encode(attrs, node.attrs)
    for key in removed:
        if key in node.attrs:
            del node.attrs[key]
    for key, value in values.items():
        if isinstance(value, list) and isinstance(value[0], str):
            value = np.asarray(value, dtype=h5py.string_dtype())
        node.attrs[key] = value


def _get_attrs(node: h5py.HLObject, nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    return decode({k: v for k, v in node.attrs.items() if k not in DIMENSION_SCALE_ATTRS}, nullable)


def _dimension(group: h5py.Group, name: str, size: int) -> h5py.Dataset:
    """A netCDF dimension: a dimension scale that holds no values (no storage)."""
    scale = group.create_dataset(name, shape=(size,), dtype=">f4")
    scale.make_scale(f"{NOT_A_VARIABLE}{size:10d}")
    return scale


def _attach(dset: h5py.Dataset, *scales: h5py.Dataset) -> None:
    for axis, scale in enumerate(scales):
        dset.dims[axis].attach_scale(scale)


def _is_layer(dset: h5py.Dataset) -> bool:
    return not h5py.h5ds.is_scale(dset.id)


def _layers(group: h5py.Group) -> dict[str, h5py.Dataset]:
    """The layers of ``activations/``, without the dimension scales beside them."""
    return {name: dset for name, dset in group.items() if _is_layer(dset)}


BLOSC_FILTER = "32001"
BLOSC_CODECS = {1: "lz4", 5: "zstd"}   # hdf5-blosc's compressor codes that actstore writes


class _ChunkEncoder:
    """Compresses one chunk into what a dataset's HDF5 filters decode (Blosc
    with one block per chunk, ``defaults.BLOSC_BLOCK_BYTES``, where HDF5's own
    filter would pick smaller blocks; Blosc records its block size per chunk).

    h5py runs every call behind one lock, so HDF5's own filters compress on one
    core. Compressing whole chunks here, on a thread pool (Blosc and zlib
    release the GIL), and handing HDF5 the finished bytes with
    ``write_direct_chunk`` uses them all. Built from the dataset's own filter
    pipeline; :meth:`for_dataset` gives None for pipelines it does not know,
    and those datasets are written through h5py as usual.
    """

    def __init__(self, kind: str, level: int = 0, checksum: bool = False) -> None:
        self.kind, self.level, self.checksum = kind, level, checksum   # checksum: Fletcher-32
        if kind in BLOSC_CODECS.values():
            self._blosc = numcodecs.Blosc(cname=kind, clevel=level, shuffle=numcodecs.Blosc.SHUFFLE,
                                          blocksize=defaults.BLOSC_BLOCK_BYTES)

    @classmethod
    def for_dataset(cls, dset: h5py.Dataset) -> "_ChunkEncoder | None":
        filters = dict(dset._filters)
        checksum = filters.pop("fletcher32", False) is not False   # last in the pipeline, as h5py puts it
        if not filters:
            return cls("none", checksum=checksum)
        if set(filters) == {"shuffle", "gzip"}:
            return cls("gzip", int(filters["gzip"]), checksum)
        if set(filters) == {BLOSC_FILTER}:
            values = filters[BLOSC_FILTER]
            if len(values) >= 7 and values[5] == 1 and values[6] in BLOSC_CODECS:
                return cls(BLOSC_CODECS[values[6]], int(values[4]), checksum)
        return None

    def __call__(self, chunk: np.ndarray) -> bytes:
        return with_fletcher32(self._compress(chunk)) if self.checksum else self._compress(chunk)

    def _compress(self, chunk: np.ndarray) -> bytes:
        if self.kind == "none":
            return chunk.tobytes()
        if self.kind == "gzip":   # HDF5's pipeline: byte shuffle, then deflate
            shuffled = numcodecs.Shuffle(elementsize=chunk.dtype.itemsize).encode(chunk)
            return zlib.compress(bytes(shuffled), self.level)
        return bytes(self._blosc.encode(chunk))


class Hdf5Writer(StoreWriter):
    format_name = "hdf5"
    default_compression = defaults.HDF5_COMPRESSION
    suffixes = (".h5", ".hdf5")
    supports_concurrent_writers = False

    def __init__(self, path: Path, file: h5py.File) -> None:
        self.path = Path(path)
        self._compressor = ChunkCompressor()
        self._attach(file)

    def _attach(self, file: h5py.File) -> None:
        """Take the handles of an open file (again, after reopening it)."""
        self._file = file
        self._layers = _layers(file[ACTIVATIONS])
        self._written = file["written"]
        self._encoders = {name: _ChunkEncoder.for_dataset(d) for name, d in self._layers.items()}

    @classmethod
    def create(cls, path: Path, layout: Layout, file_names: Sequence[str], targets: Sequence[int],
               classes: Sequence[str], attrs: Mapping[str, Any]) -> "Hdf5Writer":
        if path.exists():
            raise FileExistsError(f"{path} exists")
        # HDF5 cannot close a file whose creation ran out of space ("can't
        # destroy cache") and then crashes the process at exit: refuse first
        # when what creation writes (names, targets, headers) cannot fit.
        needed = _creation_bytes(layout, file_names)
        free = free_space(path)
        if free < needed:
            raise OutOfSpaceError(f"out of disk space creating {path} ({free:,} bytes free, its row "
                                  f"metadata needs about {needed:,}): free space and run the same command again")
        partial = path.with_name(f".{path.name}.creating-{os.getpid()}")
        try:
            file = h5py.File(partial, "w", libver=LIBVER)
            try:
                n, text = layout.n_rows, h5py.string_dtype("utf-8")
                image = _dimension(file, "image", n)
                file.create_dataset("file_names", data=np.asarray(list(file_names), dtype=object), dtype=text)
                # -1: no class, never a class index (targets are written whole at creation)
                file.create_dataset("targets", data=np.asarray(targets, dtype=np.int64), fillvalue=-1)
                file.create_dataset("classes", data=np.asarray(list(classes), dtype=object), dtype=text,
                                    shape=(len(classes),))
                _attach(file["classes"], _dimension(file, "class", len(classes)))
                file.create_dataset("written", shape=(n,), dtype="uint8", chunks=(min(layout.chunk_images, n),),
                                    fillvalue=0)
                for name in ("file_names", "targets", "written"):
                    _attach(file[name], image)
                acts = file.create_group(ACTIVATIONS)
                for spec in layout.layers:
                    # NaN where no row was written: no reader takes it for an activation
                    dset = acts.create_dataset(spec.module_name, shape=(n, *spec.shape), dtype=spec.dtype,
                                               chunks=(min(spec.chunks[0], n), *spec.chunks[1:]),
                                               fillvalue=np.nan, **_filters(layout.compression, layout.compression_level))
                    _set_attrs(dset, spec.attrs())
                    dims = stored_dim_names(spec.module_name, spec.dims)[1:]
                    _attach(dset, image, *(_dimension(acts, dim, size) for dim, size in zip(dims, spec.shape)))
                # created now: SWMR cannot add attributes (claims: one JSON text, see add_claim)
                _set_attrs(file, {"claims": {}, **attrs})
                file.flush()
                file.swmr_mode = True
            except BaseException:
                with contextlib.suppress(Exception):
                    file.close()
                raise
        except BaseException as error:   # no half-made file left behind, under any name
            partial.unlink(missing_ok=True)
            if isinstance(error, (OSError, RuntimeError)) and is_disk_full(error):
                raise OutOfSpaceError(f"out of disk space creating {path}: free space and run the same "
                                      "command again") from error
            raise
        os.replace(partial, path)   # a store appears whole or not at all
        return cls(path, file)

    @classmethod
    def reopen(cls, path: Path) -> "Hdf5Writer":
        return cls(path, _open_rw(path))

    def write_rows(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        stop = start + len(next(iter(arrays.values())))
        for name, data in arrays.items():
            dset, encode = self._layers[name], self._encoders[name]
            if encode and whole_chunks(start, stop, dset.chunks[0], dset.shape[0]):
                for index, payload in self._compressor.encode_block(
                        np.asarray(data, dtype=dset.dtype), start, dset.chunks, encode):
                    dset.id.write_direct_chunk(tuple(i * c for i, c in zip(index, dset.chunks)), payload)
            else:   # a block that ends inside a chunk (an interrupted run's last rows)
                dset[start:stop] = data
        # One flush a block: it makes this block's data durable, and the marks
        # of the block before (set after that block's flush) durable with it.
        self._file.flush()
        self._written[start:stop] = 1

    def written(self) -> np.ndarray:
        return self._written[:].astype(bool)

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        # SWMR lets us change attributes that exist (status, completed), not add
        # new ones; for those, leave SWMR mode for a moment.
        try:
            _set_attrs(self._file, attrs)
            self._file.flush()
            return
        except (OSError, RuntimeError, KeyError):
            pass
        self._file.close()
        with _while_locked(self.path, lambda: h5py.File(self.path, "r+", libver=LIBVER)) as file:
            _set_attrs(file, attrs)
        self._attach(_open_rw(self.path))

    def root_attrs(self) -> dict[str, Any]:
        return _get_attrs(self._file, NULLABLE)

    def claims(self) -> dict[str, dict[str, Any]]:
        return dict(_get_attrs(self._file).get("claims") or {})

    def add_claim(self, name: str, attrs: Mapping[str, Any]) -> None:
        # One writer at a time (no --shard with HDF5), so an attribute will do.
        self.update_attrs({"claims": {**self.claims(), name: dict(attrs)}})

    def remove_claim(self, name: str) -> None:
        self.update_attrs({"claims": {k: v for k, v in self.claims().items() if k != name}})

    def close(self) -> None:
        self._compressor.close()
        if self._file.id.valid:
            self._file.flush()
            self._file.close()

    @classmethod
    def repair(cls, path: Path) -> list[str]:
        if not _open_for_write(path):
            return []
        # Opening for writing clears the flag (and waits for, or names, a
        # process that still has the file open); closing leaves it clear.
        _open_rw(path).close()
        return [f"cleared the 'open for write' flag of {path} (as h5clear -s); no data changed"]


class Hdf5Reader(StoreReader):
    format_name = "hdf5"

    def __init__(self, path: Path | str) -> None:
        # h5py's default 1 MiB chunk cache holds no whole chunk of a big layer,
        # so reading rows one run at a time would decompress a chunk per row.
        cache = dict(rdcc_nbytes=defaults.HDF5_CHUNK_CACHE_BYTES, rdcc_nslots=10007)
        try:
            self._file = h5py.File(path, "r", swmr=True, **cache)
        except OSError:
            self._file = h5py.File(path, "r", **cache)

    def root_attrs(self) -> dict[str, Any]:
        return _get_attrs(self._file, NULLABLE)

    def layer_names(self) -> list[str]:
        return layer_order(list(_layers(self._file[ACTIVATIONS])), self.root_attrs().get("layers"))

    def layer_attrs(self, name: str) -> dict[str, Any]:
        return _get_attrs(self._file[ACTIVATIONS][name])

    def array(self, name: str) -> h5py.Dataset:
        dset = self._file[name]
        return dset.asstr() if h5py.check_string_dtype(dset.dtype) else dset

    def read(self, name: str, selection: tuple) -> np.ndarray:
        # h5py takes one index list per read; read contiguous runs of the
        # first list as slices and let h5py handle the rest.
        first, rest = selection[0], selection[1:]
        if isinstance(first, np.ndarray):
            if first.size == 0:
                shape = np.empty(self._file[name].shape)[(slice(0, 0),) + rest].shape
                return np.empty(shape, dtype=self._file[name].dtype)
            breaks = np.flatnonzero(np.diff(first) != 1) + 1
            runs = np.split(first, breaks)
            return np.concatenate([self._read(name, (slice(int(r[0]), int(r[-1]) + 1),) + rest) for r in runs])
        return self._read(name, selection)

    def _read(self, name: str, selection: tuple) -> np.ndarray:
        dset = self.array(name)
        try:
            return _read_h5(dset, selection)
        except OSError as error:   # a Fletcher-32 or Adler-32 mismatch, a codec refusing damaged bytes
            rows = np.atleast_1d(np.arange(dset.shape[0])[selection[0]])
            found = first_bad_block(lambda part: _read_h5(dset, (slice(int(part[0]), int(part[-1]) + 1),
                                                                *selection[1:])), rows, dset.chunks[0])
            if found is None:
                raise
            raise corrupt(name.rsplit("/", 1)[-1], found[0], f"file {self._file.filename}", found[1]) from error

    def chunk_stats(self, name: str) -> tuple[int, int]:
        dset = self._file[name]
        if dset.chunks is None:
            return int(dset.id.get_storage_size()), 1
        return int(dset.id.get_storage_size()), int(dset.id.get_num_chunks())

    def block_rows(self, name: str) -> int:
        dset = self._file[name]
        return int(dset.chunks[0]) if dset.chunks else int(dset.shape[0])

    def missing_blocks(self, name: str, row_blocks: Sequence[int]) -> dict[int, list[str]]:
        dset = self._file[name]
        if dset.chunks is None:
            return {}
        stored = {tuple(dset.id.get_chunk_info(i).chunk_offset) for i in range(dset.id.get_num_chunks())}
        across = list(itertools.product(*(range(0, s, c) for s, c in zip(dset.shape[1:], dset.chunks[1:]))))
        rows = dset.chunks[0]
        gone = {int(b): [f"{self._file.filename} chunk {(int(b) * rows, *rest)}" for rest in across
                         if (int(b) * rows, *rest) not in stored] for b in row_blocks}
        return {block: chunks for block, chunks in gone.items() if chunks}

    def notes(self) -> list[str]:
        notes = []
        encoders = [_ChunkEncoder.for_dataset(d) for d in _layers(self._file[ACTIVATIONS]).values()]
        codecs = {"zstd", "lz4"} & {encoder.kind for encoder in encoders if encoder}
        if codecs:
            notes.append(f"its layers use Blosc {'/'.join(sorted(codecs))}, an HDF5 filter plugin: h5py reads them "
                         "after `import hdf5plugin`; h5dump, MATLAB, R and Julia after `export HDF5_PLUGIN_PATH="
                         "$(python -c 'import hdf5plugin; print(hdf5plugin.PLUGIN_PATH)')`")
        if _open_for_write(self._file.filename):
            notes.append("the file is marked open for write: readers other than SWMR ones (h5dump, MATLAB, "
                         "plain h5py) refuse it; if no extract is writing it, `actstore verify --repair` "
                         "clears the mark (as h5clear -s)")
        return notes

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()


def _read_h5(dset, selection: tuple) -> np.ndarray:
    arrays = [i for i, s in enumerate(selection) if isinstance(s, np.ndarray)]
    if len(arrays) <= 1:
        return np.asarray(dset[tuple(s.tolist() if isinstance(s, np.ndarray) else s for s in selection)])
    # More than one list: read the first as a selection, then index the rest in memory.
    head = tuple(s if i == arrays[0] or not isinstance(s, np.ndarray) else slice(None)
                 for i, s in enumerate(selection))
    block = _read_h5(dset, head)
    squeeze = [i for i, s in enumerate(selection) if isinstance(s, (int, np.integer))]
    out_axes = [i for i in range(len(selection)) if i not in squeeze]
    for axis_in, s in enumerate(selection):
        if isinstance(s, np.ndarray) and axis_in != arrays[0]:
            block = np.take(block, s, axis=out_axes.index(axis_in))
    return block


def _creation_bytes(layout: Layout, file_names: Sequence[str]) -> int:
    """A generous bound on what creating a store writes before any row: the
    file names (a global heap entry each), targets, the ``written`` marks and
    the object headers, twice over."""
    names = sum(len(name.encode()) + 32 for name in file_names)
    return 2 * (64 * 1024 + names + 9 * layout.n_rows + 16 * 1024 * len(layout.layers))


def _while_locked(path, open_file: Callable[[], h5py.File]) -> h5py.File:
    """``open_file()``, retried while another process holds the file's lock.

    HDF5 refuses a writer while any other process has the file open, e.g. a
    reader that opened it between two runs; readers that look in for a
    moment are waited out, a long-lived one gets a message saying what to do.
    """
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            return open_file()
        except OSError as error:
            if "unable to lock file" not in str(error):
                raise
            if time.monotonic() > deadline:
                raise UserError(f"{path} is open in another process (HDF5 allows no writer then): "
                                "close it there and run again") from error
            time.sleep(0.2)


def _open_rw(path) -> h5py.File:
    """Open for writing, clearing the superblock's "open for write" flag that a
    killed SWMR writer leaves behind (what ``h5clear -s`` does), but only while
    this process holds the store's writer lock: the lock proves that no writer
    is alive, so the flag is a dead one's."""
    try:
        file = _while_locked(path, lambda: h5py.File(path, "r+", libver=LIBVER))
    except OSError as error:
        if "consistency flags" not in str(error) and "already open for write" not in str(error):
            raise
        if lock.held_here(path):
            file = _open_clearing_flags(path)
        else:
            with lock.acquire(path):
                file = _open_clearing_flags(path)
    file.swmr_mode = True
    return file


def _open_clearing_flags(path) -> h5py.File:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V114)
    _clear_status_flags_on(fapl)
    return h5py.File(_while_locked(path, lambda: h5py.h5f.open(str(path).encode(), h5py.h5f.ACC_RDWR,
                                                               fapl=fapl)))


def _open_for_write(path) -> bool:
    """Whether the superblock's "open for write" flags are set: a writer has the
    file open, or was killed with it open. Superblocks of version 2 and 3 (the
    1.10 format) keep the flags in byte 11."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    return len(head) == 12 and head[8] >= 2 and head[11] != 0


def _clear_status_flags_on(fapl) -> None:
    import ctypes
    import glob
    import os
    libs = glob.glob(os.path.join(os.path.dirname(h5py.__file__), os.pardir, "h5py.libs", "libhdf5-*.so*"))
    lib = ctypes.CDLL(libs[0]) if libs else ctypes.CDLL(None)
    lib.H5Pset.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p]
    flag = ctypes.c_bool(True)
    if lib.H5Pset(fapl.id, b"clear_status_flags", ctypes.byref(flag)) < 0:
        raise OSError("could not clear the HDF5 status flags of a killed writer")
