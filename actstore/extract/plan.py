"""Size planning: what a run will need on disk, measured before it starts.

The raw size is exact (rows x bytes per image). The stored size is estimated
by extracting an evenly spread sample of images and writing it through the
same backend, codec and chunks into a scratch store: compression ratios of
activations depend on the model, layer and images, so they are measured, not
guessed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..images import ImageSet
from ..store import Layout

# Images sampled for the compression estimate: whole chunks, a few of them.
SAMPLE_CHUNKS = 4


@dataclass
class LayerPlan:
    module_name: str
    shape: tuple[int, ...]
    bytes_per_image: int
    raw_bytes: int
    estimated_bytes: int


@dataclass
class Plan:
    """Per-layer sizes for ``rows`` images, and the free space where they go."""

    rows: int
    sample_images: int
    layers: list[LayerPlan] = field(default_factory=list)
    free_bytes: int | None = None
    files: int | None = None       # files (objects) of the complete store

    @property
    def raw_bytes(self) -> int:
        return sum(layer.raw_bytes for layer in self.layers)

    @property
    def estimated_bytes(self) -> int:
        return sum(layer.estimated_bytes for layer in self.layers)

    @property
    def fits(self) -> bool:
        return self.free_bytes is None or self.estimated_bytes <= self.free_bytes


def human_size(n: int | None) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as ``df -H``)."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def measure(forward: Callable[[np.ndarray], dict[str, np.ndarray]], images: ImageSet, layout: Layout,
            stored_bytes: Callable[[Layout, dict[str, np.ndarray]], dict[str, int]], rows: int,
            free_bytes: int | None) -> Plan:
    """Estimate the stored size of ``rows`` images from a measured sample.

    Args:
        forward: maps row indices to ``{module_name: activations}`` as stored.
        images: the run's images (only their count is used here).
        layout: the run's layout (codec, chunks, dtypes).
        stored_bytes: per layer, the bytes a sample takes where the run writes
            (:meth:`actstore.extract.target.Target.sample_bytes`).
        rows: how many rows the run will write.
        free_bytes: free space where the store will be (see :func:`actstore.store.free_space`).
    """
    n = len(images)
    count = min(n, SAMPLE_CHUNKS * layout.chunk_images)
    sample = np.unique(np.linspace(0, n - 1, count).round().astype(int))
    scratch_layout = Layout(n_rows=len(sample), layers=layout.layers, chunk_images=layout.chunk_images,
                            compression=layout.compression, compression_level=layout.compression_level)
    stored = stored_bytes(scratch_layout, forward(sample))
    plan = Plan(rows=rows, sample_images=len(sample), free_bytes=free_bytes)
    for spec in layout.layers:
        per_image = spec.bytes_per_image
        ratio = stored[spec.module_name] / (len(sample) * per_image)
        plan.layers.append(LayerPlan(spec.module_name, spec.shape, per_image, rows * per_image,
                                     math.ceil(rows * per_image * ratio)))
    return plan
