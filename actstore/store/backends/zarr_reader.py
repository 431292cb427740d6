"""Reading a zarr store: the backend's :class:`ZarrReader`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zarr

from ..layout import ACTIVATIONS, DERIVED, layer_order
from ..metadata.attributes import decode
from .base import StoreReader
from .zarr import _open_group, _with_skipped
from .zarr_integrity import locate_corruption, missing_objects, stored_bytes
from .zarr_shards import ShardFormat, ShardReader


class ZarrReader(StoreReader):
    format_name = "zarr"

    def __init__(self, path: Path | str) -> None:
        self._group = _open_group(path, "r")
        self._cache: dict[str, Any] = {}
        self._shard_readers: dict[str, ShardReader | None] = {}

    def root_attrs(self) -> dict[str, Any]:
        return _with_skipped(self._group)

    def layer_names(self) -> list[str]:
        return layer_order([name for name, _ in self._group[ACTIVATIONS].arrays()],
                           self._group.attrs.get("layers"))

    def layer_attrs(self, name: str) -> dict[str, Any]:
        return decode(dict(self.array(f"{ACTIVATIONS}/{name}").attrs))

    def array(self, name: str) -> zarr.Array:
        if name not in self._cache:
            self._cache[name] = self._group[name]
        return self._cache[name]

    def derived(self, layer: str) -> dict[str, np.ndarray]:
        if DERIVED not in self._group or layer not in self._group[DERIVED]:
            return {}
        return {name: np.asarray(arr[...]) for name, arr in self._group[DERIVED][layer].arrays()}

    def read(self, name: str, selection: tuple) -> np.ndarray:
        if name not in self._shard_readers:
            arr = self.array(name)
            shards = ShardFormat.of(arr)
            self._shard_readers[name] = ShardReader(arr, shards) if shards else None
        if self._shard_readers[name] is not None:
            return self._shard_readers[name].read(selection)
        arr = self.array(name)
        try:
            return np.asarray(arr.oindex[selection])
        except Exception as error:   # a checksum, or a codec refusing damaged bytes
            raise (locate_corruption(arr, selection) or error) from error

    def chunk_stats(self, name: str) -> tuple[int, int]:
        arr = self.array(name)
        return stored_bytes(arr), int(arr.nchunks_initialized)

    def block_rows(self, name: str) -> int:
        return int(self.array(name).metadata.chunk_grid.chunk_shape[0])

    def missing_blocks(self, name: str, row_blocks: Sequence[int]) -> dict[int, list[str]]:
        # The chunk grid of the metadata is the grid of stored objects: shards
        # where the array is sharded, chunks otherwise.
        return missing_objects(self.array(name), row_blocks)

    def files_stored(self, name: str) -> int:
        return int(self.array(name)._nshards_initialized)   # shards, or chunks when unsharded

    def close(self) -> None:
        for shards in self._shard_readers.values():
            if shards is not None:
                shards.close()
        self._shard_readers.clear()
        self._cache.clear()
