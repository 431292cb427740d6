"""Reading a hdf5 store: the backend's :class:`Hdf5Reader`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from ..codecs import BLOSC, CodecSpec
from ..integrity import corrupt, first_bad_block
from ..layout import ACTIVATIONS, DERIVED, layer_order
from ..metadata.attributes import NULLABLE
from .base import StoreReader
from .hdf5 import CHUNK_CACHE_BYTES, _get_attrs, _layers, _missing_chunks
from .hdf5_files import open_for_write


class Hdf5Reader(StoreReader):
    format_name = "hdf5"

    def __init__(self, path: Path | str) -> None:
        # h5py's default 1 MiB chunk cache holds no whole chunk of a big layer,
        # so reading rows one run at a time would decompress a chunk per row.
        cache = dict(rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=10007)
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

    def derived(self, layer: str) -> dict[str, np.ndarray]:
        group = self._file.get(f"{DERIVED}/{layer}")
        return {} if group is None else {name: np.asarray(dset[()]) for name, dset in group.items()}

    def chunk_stats(self, name: str) -> tuple[int, int]:
        dset = self._file[name]
        if dset.chunks is None:
            return int(dset.id.get_storage_size()), 1
        return int(dset.id.get_storage_size()), int(dset.id.get_num_chunks())

    def block_rows(self, name: str) -> int:
        dset = self._file[name]
        return int(dset.chunks[0]) if dset.chunks else int(dset.shape[0])

    def missing_blocks(self, name: str, row_blocks: Sequence[int]) -> dict[int, list[str]]:
        return _missing_chunks(self._file[name], row_blocks)

    def notes(self) -> list[str]:
        notes = []
        specs = [CodecSpec.from_hdf5(d._filters) for d in _layers(self._file[ACTIVATIONS]).values()]
        codecs = set(BLOSC) & {spec.name for spec in specs if spec}
        if codecs:
            notes.append(f"its layers use Blosc {'/'.join(sorted(codecs))}, an HDF5 filter plugin: h5py reads them "
                         "after `import hdf5plugin`; h5dump, MATLAB, R and Julia after `export HDF5_PLUGIN_PATH="
                         "$(python -c 'import hdf5plugin; print(hdf5plugin.PLUGIN_PATH)')`")
        if open_for_write(self._file.filename):
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
