"""The one interface every store format fills in: :class:`StoreWriter` and :class:`StoreReader`.

Backends (``zarr.py``, ``hdf5.py``) implement both; the registry picks one by
location, and nothing outside the store package knows which one it has. The
arrays they hold are described in :mod:`actstore.store.layout`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ..io.location import Location
from ..layout import LayerSpec, Layout


class StoreWriter(ABC):
    """Creates a store or reopens one to add rows. One class per format.

    Capabilities are class attributes so callers never branch on the format.
    """

    format_name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    supports_concurrent_writers: ClassVar[bool] = False
    # The codec when --compression is not given: each backend says why its own.
    default_compression: ClassVar[str] = "zstd"
    supports_urls: ClassVar[bool] = False
    # As a row sink of an extraction: a stopped run keeps its rows and resumes.
    resumable: ClassVar[bool] = True
    noun: ClassVar[str] = "store"
    supports_shards: ClassVar[bool] = False   # Layout.shard_rows: many chunks per file

    path: Path
    # Rows of one write block of the store as it is on disk (see
    # Layout.block_rows); None: the layout's. A reopened store keeps its own.
    block_rows: int | None = None
    # Rows that write_rows blocks may be cut to when finer than block_rows: a
    # writer that streams shards takes whole chunk rows (a shard's rows are
    # marked written once it is in place). None: whole block_rows blocks.
    stream_rows: int | None = None

    @classmethod
    @abstractmethod
    def matches(cls, path: Location) -> bool:
        """Whether a store of this format is at ``path`` (by its contents, not its name)."""

    @classmethod
    @abstractmethod
    def create(cls, path: Path, layout: Layout, file_names: Sequence[str],
               targets: Sequence[int], classes: Sequence[str], attrs: Mapping[str, Any]) -> "StoreWriter":
        """Create the store with every array preallocated and no row written."""

    @classmethod
    @abstractmethod
    def reopen(cls, path: Path) -> "StoreWriter":
        """Open an existing store to write its missing rows."""

    @abstractmethod
    def write_rows(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write rows ``start:start+len`` of each layer; then mark them written.

        The mark is stored only after the data, so a crash never leaves a row
        marked that holds no data.
        """

    @abstractmethod
    def written(self) -> np.ndarray:
        """The (N,) bool mask of rows already written."""

    def unmark(self, rows: np.ndarray) -> None:
        """Record the rows of mask ``rows`` (whole write blocks) as not written:
        their data was found lost or corrupt, and this run writes them again."""
        raise NotImplementedError(f"{self.format_name} stores are never resumed")

    def lost_rows(self) -> np.ndarray:
        """The (N,) mask of written rows whose stored chunk (or shard) is
        gone in some layer: what a resume writes again. None lost where the
        format cannot tell."""
        return np.zeros(len(self.written()), dtype=bool)

    @abstractmethod
    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Merge ``attrs`` into the root attributes."""

    @abstractmethod
    def root_attrs(self) -> dict[str, Any]:
        """The root attributes as stored."""

    def add_skipped(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Record images left out mid-run (``skipped_images``). A format with
        concurrent writers stores each writer's records apart, so two
        processes recording at once never overwrite each other."""
        stored = list(self.root_attrs().get("skipped_images") or [])
        self.update_attrs({"skipped_images": stored + [dict(r) for r in records]})

    def add_layer(self, spec: LayerSpec) -> None:
        """Add a layer with no row written (NaN until written), chunked and
        compressed as the store's first layer. Its rows are then written with
        :meth:`write_rows` (whose marks stay set)."""
        raise NotImplementedError(f"{self.format_name} stores cannot take new layers")

    def describe_layer(self, name: str, attrs: Mapping[str, Any],
                       derived: Mapping[str, np.ndarray] | None = None) -> None:
        """Add ``attrs`` to a layer's attributes, and store ``derived`` arrays
        (a projection's components) at ``derived/<layer>/<name>``."""
        raise NotImplementedError(f"{self.format_name} stores cannot describe layers")

    @abstractmethod
    def claims(self) -> dict[str, dict[str, Any]]:
        """The shards that processes have claimed, by ``"I-of-N"``."""

    @abstractmethod
    def add_claim(self, name: str, attrs: Mapping[str, Any]) -> None:
        """Record a shard claim under its own key, so concurrent claims never collide."""

    @abstractmethod
    def remove_claim(self, name: str) -> None:
        """Withdraw a claim this process made."""

    @abstractmethod
    def close(self) -> None:
        """Release files; what was written stays."""

    def limit_codec_threads(self, threads: int) -> None:
        """Compress chunks on at most ``threads`` threads (see
        :func:`actstore.config.codec_threads`); backends without a chunk
        compressor ignore it."""
        compressor = getattr(self, "_compressor", None)
        if compressor is not None:
            compressor.threads = threads

    @classmethod
    def file_count(cls, layout: Layout) -> int:
        """Files (or objects) a complete store of ``layout`` consists of."""
        return 1

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StoreReader(ABC):
    """Read access to one store: attributes and array handles that read lazily."""

    format_name: ClassVar[str]

    @abstractmethod
    def root_attrs(self) -> dict[str, Any]: ...

    @abstractmethod
    def layer_names(self) -> list[str]: ...

    @abstractmethod
    def layer_attrs(self, name: str) -> dict[str, Any]: ...

    @abstractmethod
    def array(self, name: str) -> Any:
        """A handle with ``shape``, ``dtype``, ``chunks`` and basic slicing;
        ``name`` is ``file_names``, ``targets``, ``classes``, ``written`` or
        ``activations/<module name>``."""

    @abstractmethod
    def read(self, name: str, selection: tuple) -> np.ndarray:
        """Read an orthogonal selection: each item an int, a slice or a sorted
        array of unique ints."""

    @abstractmethod
    def chunk_stats(self, name: str) -> tuple[int, int]:
        """(stored bytes, number of stored chunks) of one array."""

    def notes(self) -> list[str]:
        """What a reader of this store without actstore needs to know (plugins,
        flags), one line each; ``actstore info`` shows them."""
        return []

    def files_stored(self, name: str) -> int:
        """Files (or objects) holding one array's chunks: shards, chunks, or
        one file for a format that keeps everything in one."""
        return 1

    def derived(self, layer: str) -> dict[str, np.ndarray]:
        """The arrays stored with a derived layer (``derived/<layer>/``); empty if none."""
        return {}

    @abstractmethod
    def block_rows(self, name: str) -> int:
        """Rows per stored block of one array: a chunk, or a shard where chunks
        are stored in shards (the unit a lost file or object takes with it)."""

    @abstractmethod
    def missing_blocks(self, name: str, row_blocks: Sequence[int]) -> dict[int, list[str]]:
        """Those of ``row_blocks`` (indices along the image axis, in blocks of
        :meth:`block_rows`) for which some stored block is absent (rows that
        would read the fill value instead of their data), each with what is
        gone (files, objects or chunks), for messages."""

    @abstractmethod
    def close(self) -> None: ...
