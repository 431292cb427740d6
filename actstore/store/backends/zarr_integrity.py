"""Where a Zarr array's data is damaged: stored objects that are gone, and
the chunk whose bytes fail to decode (see :mod:`actstore.store.integrity`)."""
from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.common import concurrent_map
from zarr.core.config import config as zarr_config
from zarr.core.sync import sync
from zarr.storage import LocalStore

from ..codecs import CodecSpec
from ..integrity import corrupt, first_bad_block

# Up to this many objects, a presence check asks for each one instead of
# listing every key of the array (a read's few blocks; a scan lists).
FEW_KEYS = 256


def object_path(arr, key: str) -> str:
    """A stored object's file (local) or key (elsewhere), for messages."""
    store = arr.store_path.store
    return str(Path(store.root) / arr.path / key) if isinstance(store, LocalStore) else f"{arr.path}/{key}"


def _objects_of_block(arr, block: int) -> list[str]:
    """Keys of the stored objects (shards, or chunks) of one row block."""
    grid = arr.metadata.chunk_grid.chunk_shape
    across = itertools.product(*(range(math.ceil(s / c)) for s, c in zip(arr.shape[1:], grid[1:])))
    return [arr.metadata.encode_chunk_key((block, *rest)) for rest in across]


def missing_objects(arr, row_blocks: Sequence[int]) -> dict[int, list[str]]:
    """Of ``row_blocks`` (in rows of the metadata's chunk grid: shards where
    the array is sharded), those some stored object of is absent, with the
    paths of the absent objects."""
    wanted = {int(b): _objects_of_block(arr, int(b)) for b in row_blocks}
    names = [f"{arr.path}/{key}" for keys in wanted.values() for key in keys]
    store = arr.store_path.store

    async def present() -> set[str]:
        if len(names) <= FEW_KEYS:
            found = await asyncio.gather(*map(store.exists, names))
            return {name for name, there in zip(names, found) if there}
        return {key async for key in store.list_prefix(f"{arr.path}/")}
    stored = sync(present())
    gone = {block: [object_path(arr, key) for key in keys if f"{arr.path}/{key}" not in stored]
            for block, keys in wanted.items()}
    return {block: paths for block, paths in gone.items() if paths}


def stored_bytes(arr) -> int:
    """Bytes the array's chunks or shards take, as zarr's ``nbytes_stored``
    counts them (one listing, then each object's size), less a killed
    writer's unfinished shard files (``*.partial``, removed when the shard is
    written again), which hold no row of the store."""
    store = arr.store_path.store

    async def total() -> int:
        keys = [(key,) async for key in store.list_prefix(f"{arr.path}/") if not key.endswith(".partial")]
        return sum(await concurrent_map(keys, store.getsize, limit=zarr_config.get("async.concurrency")))
    return sync(total())


def locate_corruption(arr, selection: tuple) -> Exception | None:
    """After an unsharded array's read of ``selection`` failed: the
    :class:`~actstore.errors.CorruptStoreError` naming the first chunk row
    that fails on its own, and in it the first chunk whose stored bytes do
    not decode; None when every chunk row reads."""
    found = first_bad_block(lambda rows: arr.oindex[(rows, *selection[1:])],
                            np.atleast_1d(np.arange(arr.shape[0])[selection[0]]), arr.chunks[0])
    if found is None:
        return None
    rows, error = found
    spec = CodecSpec.from_zarr(arr.metadata.codecs)
    decode = spec.decoder(arr.dtype) if spec else None
    prototype = default_buffer_prototype()
    keys = _objects_of_block(arr, int(rows[0]) // arr.chunks[0])
    for key in keys if decode else ():
        try:
            decode(sync((arr.store_path / key).get(prototype)).to_bytes())
        except Exception:   # this one (a chunk that is gone reads as fill, not here)
            break
    else:
        key = keys[0].rsplit("/", len(arr.shape) - 1)[0] + "/..."   # somewhere in the chunk row
    return corrupt(arr.path.rsplit("/", 1)[-1], rows, f"chunk {object_path(arr, key)}", error)


__all__ = ["locate_corruption", "missing_objects", "object_path", "stored_bytes"]
