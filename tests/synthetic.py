"""Synthetic stores for reader tests: any size, in milliseconds, no model run.
Their values are kept in memory so every read can be compared with NumPy."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from actstore.store import FORMAT_NAME, LayerSpec, Layout, create_writer

CLASSES = ("cat", "dog", "zebra")
SUFFIXES = {"zarr": ".zarr", "hdf5": ".h5"}


def write_store(path: Path, file_format: str, n: int = 40, conv: tuple[int, ...] = (6, 5, 4),
                units: int = 10, chunk_images: int = 8, chunk_channels: int = 4,
                written: slice = slice(None), seed: int = 0, shard_rows: int = 0,
                rank: int = 0) -> dict[str, np.ndarray]:
    """Write a store with a conv layer ``features.0`` (chunked along images and
    channels) and a linear layer ``classifier.4``; return the layers' values.
    Rows outside ``written`` are left unwritten; ``shard_rows`` > 0 writes Zarr
    shards of that many rows; ``rank`` > 0 makes ``features.0`` a rank-``rank``
    signal with a decaying spectrum plus a little noise (for PCA), not ReLU noise."""
    rng = np.random.default_rng(seed)
    shapes = {"features.0": conv, "classifier.4": (units,)}
    specs = tuple(LayerSpec(name, shape, shape, "float32",
                            (chunk_images, min(chunk_channels, shape[0]), *shape[1:]))
                  for name, shape in shapes.items())
    # Uneven classes (cat 14, dog 14, zebra 12 for n=40), file names in folders.
    targets = np.arange(n) // -(-n // len(CLASSES))
    file_names = [f"{CLASSES[t]}/{CLASSES[t]}_{i}.png" for i, t in enumerate(targets)]
    values = {name: np.maximum(rng.standard_normal((n, *shape)), 0).astype("float32")
              for name, shape in shapes.items()}
    if rank:
        units = int(np.prod(conv))
        signal = (rng.standard_normal((n, rank)) * 2.0 ** -np.arange(rank)) @ rng.standard_normal((rank, units))
        values["features.0"] = (signal + 0.01 * rng.standard_normal((n, units)) + 1).reshape(n, *conv).astype("float32")
    layout = Layout(n_rows=n, layers=specs, chunk_images=chunk_images, shard_rows=shard_rows)
    writer = create_writer(path, file_format, layout,
                           file_names, targets, list(CLASSES),
                           {"format": FORMAT_NAME, "model_name": "synthetic", "weights": "none",
                            "status": "complete" if written == slice(None) else "incomplete"})
    start, stop, _ = written.indices(n)
    writer.write_rows(start, {name: v[start:stop] for name, v in values.items()})
    writer.close()
    return values
