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
import errno
import itertools
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter with HDF5, for reading)
import numpy as np

from ...errors import OutOfSpaceError, is_disk_full
from ..codecs import ChunkCompressor, CodecSpec, whole_chunks
from ..integrity import row_runs, rows_of_blocks
from ..io.location import Location, free_space, is_url
from ..layout import ACTIVATIONS, DERIVED, FORMAT_NAME, LayerSpec, Layout, stored_dim_names
from ..metadata.attributes import NULLABLE, decode, encode
from .base import StoreWriter
from .hdf5_files import LIBVER, open_for_write, open_rw, while_locked

DIMENSION_SCALE_ATTRS = ("DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME")   # HDF5's own, not ours
# What netCDF writes into a dimension scale that is only a dimension (no coordinate values).
NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."
# The first bytes of every HDF5 file.
SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Chunk cache per open dataset when reading: several of the largest chunks
# (config.CHUNK_BYTES), so row-by-row reads decompress each chunk once.
CHUNK_CACHE_BYTES = 64 * 2**20


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


def _chunk_encoder(dset: h5py.Dataset):
    """Compresses one chunk into what a dataset's HDF5 filters decode, or None
    for a pipeline actstore does not write (h5py then writes it as usual).

    h5py runs every call behind one lock, so HDF5's own filters compress on one
    core. Compressing whole chunks on the codec's thread pool and handing HDF5
    the finished bytes with ``write_direct_chunk`` uses every core.
    """
    spec = CodecSpec.from_hdf5(dset._filters)
    return spec.encoder("hdf5") if spec else None


class Hdf5Writer(StoreWriter):
    format_name = "hdf5"
    # deflate (gzip) with byte shuffle: the one codec every HDF5 build decodes
    # without plugins (MATLAB, R, Julia, h5dump, netCDF-C); Blosc there needs
    # the hdf5plugin filters, so it is for --compression zstd/lz4 only.
    default_compression = "gzip"
    suffixes = (".h5", ".hdf5")
    supports_concurrent_writers = False

    @classmethod
    def matches(cls, path: Location) -> bool:
        if is_url(path) or not Path(path).is_file():
            return False
        with Path(path).open("rb") as handle:
            if handle.read(8) != SIGNATURE:
                return False
        try:   # read-only, SWMR where a writer has it open: the format attribute, nothing else
            try:
                file = h5py.File(path, "r", swmr=True)
            except OSError:
                file = h5py.File(path, "r")
        except (OSError, RuntimeError):   # HDF5 refuses a file that only starts like one
            return False
        with file:
            value = file.attrs.get("format")
        return (value.decode() if isinstance(value, bytes) else value) == FORMAT_NAME

    def __init__(self, path: Path, file: h5py.File) -> None:
        self.path = Path(path)
        self._compressor = ChunkCompressor()
        self._failed = False   # a write ran out of space: the file is let go (see _give_up)
        self._kept: np.ndarray | None = None
        self._attach(file)

    def _attach(self, file: h5py.File) -> None:
        """Take the handles of an open file (again, after reopening it)."""
        self._file = file
        self._layers = _layers(file[ACTIVATIONS])
        self._written = file["written"]
        self._encoders = {name: _chunk_encoder(d) for name, d in self._layers.items()}

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
                                               fillvalue=np.nan, **layout.codec.hdf5_filters())
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
        return cls(path, open_rw(path))

    def write_rows(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        try:
            self._write_rows(start, arrays)
        except (OSError, RuntimeError) as error:
            if not is_disk_full(error):
                raise
            self._give_up()
            # HDF5's own text names the temporary file the store was created as
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {self.path}") from error

    def _give_up(self) -> None:
        """After a full disk: stop using the file, and take the rows it holds
        from the file on disk, which resuming will find, not from HDF5's cache
        (marks set but never flushed are not kept). The handle is not closed:
        the close cannot flush either, would raise a second error over the first,
        and a half-failed close leaves h5py objects that crash the interpreter
        as they are collected; the process's exit lets go of the file."""
        self._failed = True
        with contextlib.suppress(Exception):   # the marks of flushed blocks may still fit (a chunk did not)
            self._file.flush()
        try:
            # a file object: HDF5 opens it apart from the failed handle, so it reads what is on disk
            with open(self.path, "rb") as raw, h5py.File(raw, "r") as on_disk:
                self._kept = on_disk["written"][:].astype(bool)
        except Exception:  # unreadable now: claim nothing rather than too much
            self._kept = np.zeros(self._written.shape, dtype=bool)

    def _write_rows(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        stop = start + len(next(iter(arrays.values())))
        blocks = []   # every layer's chunks queued on the codec's pool at once; each stored as it is done
        for name, data in arrays.items():
            dset, encode = self._layers[name], self._encoders[name]
            if encode and whole_chunks(start, stop, dset.chunks[0], dset.shape[0]):
                blocks.append((dset, np.asarray(data, dtype=dset.dtype), start, dset.chunks, encode, None))
            else:   # a block that ends inside a chunk (an interrupted run's last rows)
                dset[start:stop] = data
        for dset, index, payload in self._compressor.iter_blocks(blocks):
            dset.id.write_direct_chunk(tuple(i * c for i, c in zip(index, dset.chunks)), payload)
        # One flush a block: it makes this block's data durable, and the marks
        # of the block before (set after that block's flush) durable with it.
        self._file.flush()
        self._written[start:stop] = 1

    def written(self) -> np.ndarray:
        if self._failed:
            return self._kept.copy()
        return self._written[:].astype(bool)

    def unmark(self, rows: np.ndarray) -> None:
        for first, last in row_runs(np.flatnonzero(rows)):
            self._written[first:last + 1] = 0
        self._file.flush()

    def lost_rows(self) -> np.ndarray:
        return rows_of_blocks(self.written(), [(d.chunks[0], lambda blocks, d=d: _missing_chunks(d, blocks))
                                               for d in self._layers.values()])

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        # SWMR lets us change attributes that exist (status, completed), not add
        # new ones; for those, leave SWMR mode for a moment.
        try:
            _set_attrs(self._file, attrs)
            self._file.flush()
            return
        except (OSError, RuntimeError, KeyError):
            pass
        with self._without_swmr() as file:
            _set_attrs(file, attrs)

    def root_attrs(self) -> dict[str, Any]:
        return _get_attrs(self._file, NULLABLE)

    def add_layer(self, spec: LayerSpec) -> None:
        pipeline = next(iter(self._layers.values())).id.get_create_plist().copy()   # the same filters
        layers = [*(self.root_attrs().get("layers") or []), spec.module_name]
        with self._without_swmr() as file:
            acts, n = file[ACTIVATIONS], file["written"].shape[0]
            dset = acts.create_dataset(spec.module_name, shape=(n, *spec.shape), dtype=spec.dtype,
                                       chunks=(min(spec.chunks[0], n), *spec.chunks[1:]), fillvalue=np.nan,
                                       dcpl=pipeline)
            _set_attrs(dset, spec.attrs())
            dims = stored_dim_names(spec.module_name, spec.dims)[1:]
            _attach(dset, file["image"], *(_dimension(acts, dim, size) for dim, size in zip(dims, spec.shape)))
            _set_attrs(file, {"layers": layers})

    def describe_layer(self, name: str, attrs: Mapping[str, Any],
                       derived: Mapping[str, np.ndarray] | None = None) -> None:
        with self._without_swmr() as file:
            _set_attrs(file[f"{ACTIVATIONS}/{name}"], attrs)
            group = file.require_group(DERIVED).require_group(name)
            for key, value in (derived or {}).items():
                if key in group:
                    del group[key]
                group.create_dataset(key, data=value)

    @contextlib.contextmanager
    def _without_swmr(self):
        """The file opened outside SWMR (which can neither create datasets nor
        add attributes) for a moment, as :meth:`update_attrs` does."""
        self._file.close()
        try:
            with while_locked(self.path, lambda: h5py.File(self.path, "r+", libver=LIBVER)) as file:
                yield file
        finally:
            self._attach(open_rw(self.path))

    def claims(self) -> dict[str, dict[str, Any]]:
        return dict(_get_attrs(self._file).get("claims") or {})

    def add_claim(self, name: str, attrs: Mapping[str, Any]) -> None:
        # One writer at a time (no --shard with HDF5), so an attribute will do.
        self.update_attrs({"claims": {**self.claims(), name: dict(attrs)}})

    def remove_claim(self, name: str) -> None:
        self.update_attrs({"claims": {k: v for k, v in self.claims().items() if k != name}})

    def close(self) -> None:
        self._compressor.close()
        if not self._failed and self._file.id.valid:
            self._file.flush()
            self._file.close()

    @classmethod
    def repair(cls, path: Path) -> list[str]:
        if not open_for_write(path):
            return []
        # Opening for writing clears the flag (and waits for, or names, a
        # process that still has the file open); closing leaves it clear.
        open_rw(path).close()
        return [f"cleared the 'open for write' flag of {path} (as h5clear -s); no data changed"]


def _missing_chunks(dset: h5py.Dataset, row_blocks: Sequence[int]) -> dict[int, list[str]]:
    """Those of ``row_blocks`` (chunk rows) with a chunk never stored, each with the chunks, for messages."""
    if dset.chunks is None:
        return {}
    stored = {tuple(dset.id.get_chunk_info(i).chunk_offset) for i in range(dset.id.get_num_chunks())}
    across = list(itertools.product(*(range(0, s, c) for s, c in zip(dset.shape[1:], dset.chunks[1:]))))
    rows = dset.chunks[0]
    gone = {int(b): [f"{dset.file.filename} chunk {(int(b) * rows, *rest)}" for rest in across
                     if (int(b) * rows, *rest) not in stored] for b in row_blocks}
    return {block: chunks for block, chunks in gone.items() if chunks}


def _creation_bytes(layout: Layout, file_names: Sequence[str]) -> int:
    """A generous bound on what creating a store writes before any row: the
    file names (a global heap entry each), targets, the ``written`` marks and
    the object headers, twice over."""
    names = sum(len(name.encode()) + 32 for name in file_names)
    return 2 * (64 * 1024 + names + 9 * layout.n_rows + 16 * 1024 * len(layout.layers))
