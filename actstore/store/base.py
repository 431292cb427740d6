"""The one interface every store format fills in, and the layout they share.

A store holds, for N images in a fixed order:

- ``file_names`` (N,) strings, ``targets`` (N,) int64, ``classes`` (K,) strings;
- ``activations/<module name>`` (N, *per-image shape), chunked along images;
- ``written`` (N,) uint8: 1 once a row's activations are durable. Readers trust
  only these rows, and a resumed run fills the others;
- root attributes (provenance, fingerprint, status) and per-layer attributes.

Backends (``zarr.py``, ``hdf5.py``, ``legacy_files.py``) implement :class:`StoreWriter` and
:class:`StoreReader`; nothing outside this package knows which one it has.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from .. import defaults

FORMAT_NAME = "actstore"
FORMAT_VERSION = 1
ACTIVATIONS = "activations"
COMPRESSIONS = ("zstd", "lz4", "gzip", "none")
DTYPES = ("float32", "float16")


def dim_names(native_shape: Sequence[int], flattened: bool) -> tuple[str, ...]:
    """Names of a layer's dimensions, the image axis first."""
    if flattened or len(native_shape) == 1:
        return ("image", "unit")
    if len(native_shape) == 3:
        return ("image", "channel", "height", "width")
    if len(native_shape) == 2:   # transformer tokens: (N, tokens, dim)
        return ("image", "token", "channel")
    return ("image",) + tuple(f"dim_{i}" for i in range(1, len(native_shape) + 1))


def stored_dim_names(module_name: str, dims: Sequence[str]) -> tuple[str, ...]:
    """Dimension names as written into a Zarr store: ``image`` shared, the others
    qualified by the layer (``features.0:channel``), because layers of one store
    share ``activations/`` and ``xarray.open_zarr(path, group="activations")``
    needs one size per name (``channel`` is 64 in one layer, 256 in another)."""
    return tuple(d if d == "image" else f"{module_name}:{d}" for d in dims)


def choose_chunks(shape: Sequence[int], itemsize: int, chunk_images: int,
                  chunk_channels: int | None = None, max_bytes: int = defaults.CHUNK_BYTES) -> tuple[int, ...]:
    """Chunk shape for a layer of per-image ``shape``: ``chunk_images`` rows,
    split along the channel (unit) axis when a chunk would exceed
    ``max_bytes``, into equal parts (the largest divisor of the channel count
    that fits) so no chunk is a ragged remainder. The channel axis is the
    first per-image axis, except for token layers (``tokens, channels``):
    there it is the last, and every chunk keeps all tokens (197 tokens, a
    prime, would otherwise be cut into one-token chunks). Where the largest
    divisor is under half of what fits (a prime count), the axis is cut into
    near-equal parts with a smaller last one instead of into tiny chunks.

    Example:
        >>> choose_chunks((192, 27, 27), 4, 16, max_bytes=2**20)
        (16, 16, 27, 27)
        >>> choose_chunks((197, 384), 4, 16, max_bytes=2**20)
        (16, 197, 64)
        >>> choose_chunks((197, 13, 13), 4, 16, max_bytes=2**20)
        (16, 97, 13, 13)
    """
    if not shape:
        return (chunk_images,)
    tokens = len(shape) == 2
    channels, rest = (shape[1], shape[:1]) if tokens else (shape[0], shape[1:])
    if chunk_channels is not None:
        channel_chunk = max(1, min(channels, chunk_channels))
    else:
        per_channel = math.prod(rest) * itemsize * chunk_images
        fit = max(1, max_bytes // per_channel)
        channel_chunk = channels if fit >= channels else max(d for d in range(1, fit + 1) if channels % d == 0)
        if 2 * channel_chunk < fit:   # an awkward count (a prime): near-equal parts, a smaller last one
            channel_chunk = math.ceil(channels / math.ceil(channels / fit))
    return (chunk_images, *rest, channel_chunk) if tokens else (chunk_images, channel_chunk, *rest)


def layer_order(found: Sequence[str], recorded: Any) -> list[str]:
    """The layers a store holds, ``found`` in any order, listed in the order of
    its ``layers`` root attribute (the ``--module-name`` order); layers it does
    not name, and stores written before it was recorded, follow sorted by name,
    so the order is the same on every open.

    Example:
        >>> layer_order(["fc", "conv1", "layer1"], ["layer1", "conv1"])
        ['layer1', 'conv1', 'fc']
    """
    named = [name for name in (recorded if isinstance(recorded, list) else []) if name in found]
    return named + sorted(set(found) - set(named))


@dataclass(frozen=True)
class LayerSpec:
    """One stored layer: its name, per-image shape and how it is laid out."""

    module_name: str
    shape: tuple[int, ...]          # per image, as stored
    native_shape: tuple[int, ...]   # per image, as the module returned it
    dtype: str
    chunks: tuple[int, ...]         # including the image axis
    # "NHWC" when the module returned (N, H, W, C) and it is stored (N, C, H, W)
    module_layout: str | None = None

    @property
    def flattened(self) -> bool:
        return self.shape != self.native_shape

    @property
    def dims(self) -> tuple[str, ...]:
        return dim_names(self.native_shape, self.flattened)

    @property
    def bytes_per_image(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def attrs(self) -> dict[str, Any]:
        return {"module_name": self.module_name, "dims": list(self.dims),
                "native_shape": list(self.native_shape), "shape": list(self.shape),
                "flattened": self.flattened, "dtype": self.dtype,
                **({"module_layout": self.module_layout} if self.module_layout else {})}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], chunks: Sequence[int]) -> "LayerSpec":
        return cls(module_name=attrs["module_name"], shape=tuple(attrs["shape"]),
                   native_shape=tuple(attrs["native_shape"]), dtype=attrs["dtype"],
                   chunks=tuple(chunks), module_layout=attrs.get("module_layout"))


@dataclass(frozen=True)
class Layout:
    """Everything a backend needs to create a store's arrays."""

    n_rows: int
    layers: tuple[LayerSpec, ...]
    chunk_images: int = defaults.CHUNK_IMAGES
    compression: str = defaults.ZARR_COMPRESSION
    compression_level: int | None = None   # None: the codec's default level
    # Rows per Zarr shard (one file of many inner chunks); 0: one file per
    # chunk. Backends without shards (HDF5) ignore it.
    shard_rows: int = 0

    @property
    def level(self) -> int | None:
        """The codec level the arrays are written with (None for ``none``)."""
        if self.compression == "none":
            return None
        return defaults.COMPRESSION_LEVELS[self.compression] if self.compression_level is None \
            else self.compression_level

    @property
    def block_rows(self) -> int:
        """Rows per write block: every split of rows (the row buffer, process
        ranges, resume) aligns to it, so no two writes, and no two processes,
        ever share a chunk or a shard. A shard's rows, else a chunk's."""
        return self.shard_rows or self.chunk_images


class StoreWriter(ABC):
    """Creates a store or reopens one to add rows. One class per format.

    Capabilities are class attributes so callers never branch on the format.
    """

    format_name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    supports_concurrent_writers: ClassVar[bool] = False
    # The codec when --compression is not given (defaults.py says why each).
    default_compression: ClassVar[str] = defaults.ZARR_COMPRESSION
    supports_resume: ClassVar[bool] = True
    supports_urls: ClassVar[bool] = False
    # False for a write-only layout (the original txt/npy files): no reader,
    # never reopened, rechunked or imported into.
    readable: ClassVar[bool] = True
    # What the output is called in messages ("store complete").
    output_noun: ClassVar[str] = "store"
    # The most bytes one stored value can take (text formats: its widest
    # printed form); None: the dtype's size, compression only shrinks it.
    # The free-space check measures a sample only when this bound does not fit.
    max_bytes_per_value: ClassVar[int | None] = None
    supports_shards: ClassVar[bool] = False   # Layout.shard_rows: many chunks per file

    path: Path
    # Rows of one write block of the store as it is on disk (see
    # Layout.block_rows); None: the layout's. A reopened store keeps its own.
    block_rows: int | None = None

    def stored_bytes(self) -> dict[str, int] | None:
        """Per layer, the bytes a closed writer's files hold, where no reader
        can tell (plain files); None: ask the store's reader."""
        return None

    @classmethod
    def make_way(cls, path: Path, layout: Layout, attrs: Mapping[str, Any], overwrite: bool) -> None:
        """For a backend that is never resumed: refuse what a new output would
        replace at ``path`` unless ``overwrite`` (which replaces it only once
        the new output has finished). Stores that resume
        are opened, resumed or replaced by :mod:`actstore.store.session`."""

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
        :func:`actstore.defaults.codec_threads`); backends without a chunk
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
