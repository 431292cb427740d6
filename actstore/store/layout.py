"""The layout every store format shares: which arrays a store holds and how they are chunked.

A store holds, for N images in a fixed order:

- ``file_names`` (N,) strings, ``targets`` (N,) int64, ``classes`` (K,) strings;
- ``activations/<module name>`` (N, *per-image shape), chunked along images;
- ``written`` (N,) uint8: 1 once a row's activations are durable. Readers trust
  only these rows, and a resumed run fills the others;
- root attributes (provenance, fingerprint, status) and per-layer attributes.

:class:`LayerSpec` describes one layer, :class:`Layout` a whole store; the
backends (:mod:`actstore.store.backends`) create their arrays from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .. import config
from .codecs import CodecSpec

FORMAT_NAME = "actstore"
FORMAT_VERSION = 1
ACTIVATIONS = "activations"
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
                  chunk_channels: int | None = None, max_bytes: int = config.CHUNK_BYTES) -> tuple[int, ...]:
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
    chunk_images: int = config.CHUNK_IMAGES
    compression: str = "zstd"
    compression_level: int | None = None   # None: the codec's default level
    # Rows per Zarr shard (one file of many inner chunks); 0: one file per
    # chunk. Backends without shards (HDF5) ignore it.
    shard_rows: int = 0

    @property
    def codec(self) -> CodecSpec:
        return CodecSpec(self.compression, self.compression_level)

    @property
    def level(self) -> int | None:
        """The codec level the arrays are written with (None for ``none``)."""
        return self.codec.stored_level

    @property
    def block_rows(self) -> int:
        """Rows per write block: every split of rows (the row buffer, process
        ranges, resume) aligns to it, so no two writes, and no two processes,
        ever share a chunk or a shard. A shard's rows, else a chunk's."""
        return self.shard_rows or self.chunk_images
