"""Projections of every written row written back as a new layer, with provenance.

A layer ``<layer>.pca<k>`` holds ``(x − mean) Vᵀ`` for every written row;
its attributes name the source store and layer, the rows that fitted the
components (as ``[first, last]`` runs) and the explained variances, and
``store.derived(name)`` returns its ``components`` and ``mean``.
"""
from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StoreConflictError, StoresDifferError
from ..store import (
    FORMAT_NAME,
    LayerSpec,
    Layout,
    Store,
    create_writer,
    detect_format,
    is_store,
    reopen_writer,
    writer_class,
)
from ..store.io.location import identity, location
from .blocks import READ_SHARE, LayerBlocks, Progress

if TYPE_CHECKING:
    from .pca import PCAResult


def row_runs(rows: np.ndarray) -> list[list[int]]:
    """Sorted rows as ``[first, last]`` runs: ``[0, 1, 2, 5] -> [[0, 2], [5, 5]]``."""
    rows = np.unique(rows)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [[int(g[0]), int(g[-1])] for g in np.split(rows, breaks) if len(g)]


def project(store: Store, result: "PCAResult", rows: np.ndarray, budget: int, bar: Progress) -> np.ndarray:
    """Scores ``(x − mean) Vᵀ`` of ``rows`` in an array of every row (NaN for
    the others), one pass over row blocks."""
    blocks = LayerBlocks(store, result.layer, rows)
    components, mean = result.flat_components, result.mean.values.reshape(-1)
    scores = np.full((len(store), len(components)), np.nan, dtype=np.float32)
    for positions, x in blocks.row_blocks(blocks.row_step(int(budget * READ_SHARE)), bar):
        x -= mean
        scores[rows[positions]] = x @ components.T
    bar.passes += 1
    return scores


def provenance(store: Store, result: "PCAResult") -> dict[str, Any]:
    return {"derived_from": str(store.path), "source_layer": result.layer, "analysis": "pca",
            "pca_method": result.method, "fitted_rows": row_runs(result.rows), "n_fitted": int(len(result.rows)),
            "explained_variance": [float(v) for v in result.explained_variance.values],
            "explained_variance_ratio": [float(v) for v in result.explained_variance_ratio.values],
            "total_variance": float(result.total_variance),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def check_target(store: Store, write_to: Any, layer: str, k: int) -> None:
    """Refuse, before any pass, a target store that already holds ``<layer>.pca<k>``."""
    name, path = f"{layer}.pca{k}", location(write_to)
    if identity(path) == identity(store.path):
        held = store.layers
    elif is_store(path):
        from ..store import open_store
        with open_store(path) as other:
            held = other.layers
    else:
        return
    if name in held:
        raise StoreConflictError(f"{path} already holds a layer {name!r}: write the scores to another store")


def _target(store: Store, path: Any, spec: LayerSpec, chunk_rows: int):
    """A writer for the store at ``path``: the source itself, another store of
    the same images, or a new store holding the images' names and targets."""
    path = location(path)
    if identity(path) == identity(store.path) or is_store(path):
        writer = reopen_writer(path)
        if identity(path) != identity(store.path):
            from ..store import open_store
            with open_store(path) as other:
                if list(other.file_names) != list(store.file_names):
                    writer.close()
                    raise StoresDifferError(f"{path} holds other images than {store.path}: write the "
                                            "scores to a new store or to the source store")
        return writer, False
    attrs = {key: value for key, value in store.attrs.items() if key not in ("layers", "fingerprint", "claims")}
    attrs.update({"format": FORMAT_NAME, "status": "complete" if store.complete else "incomplete"})
    layout = Layout(n_rows=len(store), layers=(spec,), chunk_images=chunk_rows)
    return create_writer(path, detect_format(path), layout, list(store.file_names), store.targets,
                         store.classes, attrs), True


def write_scores(store: Store, result: "PCAResult", write_to: Any, scores: np.ndarray) -> str:
    """Write the scores of every written row (from :func:`project`) as
    ``<layer>.pca<k>`` at ``write_to``; returns ``"<path>:<layer name>"``."""
    k = len(result.explained_variance)
    name = f"{result.layer}.pca{k}"
    chunk_rows = store[result.layer].chunks[0]
    spec = LayerSpec(name, (k,), (k,), "float32", (chunk_rows, k))
    derived = {"components": result.flat_components, "mean": result.mean.values.reshape(-1)}
    written, attrs = store.written.copy(), provenance(store, result)
    same = identity(location(write_to)) == identity(store.path)
    if same and not writer_class(detect_format(store.path)).supports_concurrent_writers:
        store.close()   # a format whose writer wants the file to itself: reopen the store to read on
    writer, new = _target(store, write_to, spec, chunk_rows)
    try:
        if not new:
            writer.add_layer(spec)
        writer.describe_layer(name, attrs, derived)
        step = writer.block_rows or chunk_rows
        for first, last in row_runs(np.flatnonzero(written)):
            start = first
            while start <= last:
                stop = min(last + 1, (start // step + 1) * step)
                writer.write_rows(start, {name: scores[start:stop]})
                start = stop
    finally:
        writer.close()
    return f"{write_to}:{name}"
