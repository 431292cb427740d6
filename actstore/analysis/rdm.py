"""Class means and representational dissimilarity matrices straight from a
store, in bounded memory (RSA between two RDMs is :mod:`.rsa`).

An RDM is built from the Gram matrix ``G = X Xᵀ`` of the flattened rows,
accumulated in float64 over blocks of units (so any number of units works),
with the row sums ``s = X·1`` and squared norms ``q = diag(G)``:

- correlation: ``1 − (G_ij − s_i s_j / p) / sqrt((q_i − s_i²/p)(q_j − s_j²/p))``;
- cosine: ``1 − G_ij / sqrt(q_i q_j)``;
- euclidean: ``sqrt(max(q_i + q_j − 2 G_ij, 0))``.

Before the products, each row is shifted by its mean over the first block
of units (correlation ignores a row's constant) or every row by one common
constant (euclidean distance ignores that), so large means do not cancel
digits. ``precision="auto"`` multiplies the blocks in float32 for
correlation and cosine (float32 sums over at most 8,192 units, added in
float64, after each block's mean row is taken out: :class:`MeanRows`;
errors of a few 1e-7 at half the time of float64 products) and in float64
for euclidean distance, whose ``q_i + q_j − 2 G_ij`` cancels. When the n×n
result does not fit the budget it is computed in tiles of rows, one pass
over the store per tile, and written to ``out`` (a Zarr path) and returned
lazily.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadOptionError, MemoryBudgetError, TooFewRowsError
from ..store import Store
from .blocks import (
    READ_SHARE,
    LayerBlocks,
    Progress,
    column_units,
    human,
    opened,
    parse_memory,
    select_rows,
    tile_rows,
)
from .products import Backend, GramSum, MeanRows

if TYPE_CHECKING:
    import xarray

METRICS = ("correlation", "cosine", "euclidean")
BY = ("image", "class")
PRECISIONS = ("auto", "float64", "float32")


def _require_classes(store: Store) -> None:
    if not store.classes:
        raise BadOptionError(f"{store.path} has no classes (its images were one flat folder): use by='image'")


def class_means(store: Store | Any, layer: str, *, rows: Any = None, max_memory: int | str = "2GB",
                progress: bool = False) -> "xarray.DataArray":
    """The mean activation of each class, ``mean_c = (1/|c|) Σ_{i∈c} x_i``, in one pass.

    Args:
        store: an open store or its path.
        layer: a layer name.
        rows: rows to average (default every row); classes without rows are left out.
        max_memory: budget for read blocks, e.g. ``"2GB"``.
        progress: show a progress bar.

    Returns:
        A DataArray with dims ``class`` plus the layer's unit dims, class names as coordinates.
    """
    import xarray as xr
    budget = parse_memory(max_memory)
    with opened(store) as st:
        _require_classes(st)
        chosen = select_rows(st, rows, minimum=1)
        blocks = LayerBlocks(st, layer, chosen)
        present, index = np.unique(st.targets[chosen], return_inverse=True)
        sums = np.zeros((len(present), blocks.units))
        bar = Progress(description=f"class means {blocks.layer}", enabled=progress)
        for positions, data in blocks.row_blocks(blocks.row_step(int(budget * READ_SHARE)), bar):
            np.add.at(sums, index[positions], data)
        bar.close()
        counts = np.bincount(index, minlength=len(present))
        means = (sums / counts[:, None]).reshape(len(present), *blocks.unit_shape)
        names = [st.classes[t] for t in present]
        return xr.DataArray(means, dims=("class", *st.spec(blocks.layer).dims[1:]), name=f"{blocks.layer} class means",
                            coords={"class": names, "count": ("class", counts)},
                            attrs={"layer": blocks.layer, "store": str(st.path), "passes": 1})


def _conditions(store: Store, rows: np.ndarray, by: str) -> tuple[np.ndarray | None, list[str], np.ndarray]:
    """For ``by="class"``: each row's class position; the labels; each label's class name."""
    if by == "image":
        return None, list(store.file_names[rows]), store.class_names[rows]
    _require_classes(store)
    present, index = np.unique(store.targets[rows], return_inverse=True)
    names = [store.classes[t] for t in present]
    return index, names, np.asarray(names)


def _class_block(block: np.ndarray, index: np.ndarray, counts: np.ndarray) -> np.ndarray:
    means = np.zeros((len(counts), block.shape[1]))
    np.add.at(means, index, block)
    return means / counts[:, None]


def _finish(gram: np.ndarray, s: np.ndarray, q: np.ndarray, start: int, metric: str, p: int) -> np.ndarray:
    """Turn rows ``start:start+len(gram)`` of the Gram matrix into dissimilarities,
    in place, a few rows at a time (every step on rows still in cache; no n×n
    temporary)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "euclidean":
            scale = None
        elif metric == "correlation":
            scale = np.sqrt(np.maximum(q - s * s / p, 0))
        else:
            scale = np.sqrt(q)
        if scale is not None:
            scale = 1 / np.where(_degenerate(q, s, p, metric), np.nan, scale)
        step = max(1, (2 * 2**20) // (8 * max(1, gram.shape[1])))
        for first in range(0, len(gram), step):
            rows = slice(start + first, start + min(len(gram), first + step))
            tile = gram[first:first + step]
            if metric == "euclidean":
                tile *= -2
                tile += q[rows, None]
                tile += q[None, :]
                np.maximum(tile, 0, out=tile)
                np.sqrt(tile, out=tile)
                continue
            if metric == "correlation":
                tile -= (s[rows, None] / p) * s[None, :]
            tile *= scale[rows, None]
            tile *= scale[None, :]
            np.subtract(1, tile, out=tile)
    local = np.arange(len(gram))
    gram[local, local + start] = 0.0
    return gram


def _degenerate(q: np.ndarray, s: np.ndarray, p: int, metric: str) -> np.ndarray:
    """Rows whose correlation (constant rows) or cosine (zero rows) is undefined."""
    spread = q - s * s / p if metric == "correlation" else q
    return spread <= 1e-12 * np.maximum(q, np.finfo(float).tiny)


def _warn_degenerate(q: np.ndarray, s: np.ndarray, p: int, metric: str, labels: list[str]) -> None:
    if metric == "euclidean":
        return
    bad = np.flatnonzero(_degenerate(q, s, p, metric))
    if bad.size:
        what = "constant" if metric == "correlation" else "all zero"
        names = ", ".join(labels[i] for i in bad[:5]) + (f" and {bad.size - 5} more" if bad.size > 5 else "")
        warnings.warn(f"{bad.size} row(s) are {what}, so their {metric} is undefined and their "
                      f"dissimilarities are NaN: {names}", RuntimeWarning, stacklevel=3)


@dataclass
class _Plan:
    metric: str
    index: np.ndarray | None
    counts: np.ndarray | None
    m: int
    tile: int
    units: int
    single: bool


def _shift(block: np.ndarray, metric: str) -> float | np.ndarray:
    """What the rows are shifted by: for correlation each row's mean over the
    first block; for euclidean one constant, the mean of a few rows of the
    first block (NaN ignored; any value near the data's level keeps digits);
    for cosine nothing."""
    if metric == "correlation":
        means = block.mean(axis=1, dtype=np.float64)
        return np.where(np.isfinite(means), means, 0.0)
    if metric == "cosine":
        return 0.0
    sample = block[: max(1, min(len(block), 2**16 // max(1, block.shape[1])))]
    finite = sample[np.isfinite(sample)]
    return float(finite.mean()) if finite.size else 0.0


@dataclass
class _Sums:
    """What the first pass learns of every row ``y`` (the row after its shift):
    its sum ``s`` and squared norm ``q``; with float32 products also what was
    taken out of each block before them (:class:`MeanRows`)."""

    shift: Any
    s: np.ndarray
    q: np.ndarray
    mean_rows: MeanRows = field(default_factory=MeanRows)


class _OutOfFloat32(Exception):
    """A block whose float32 products could overflow or underflow: multiply in float64."""


def _fits_float32(block: np.ndarray) -> bool:
    """Whether float32 sums of this block's products (over at most 8,192 units)
    can neither overflow (|x| < 1e17) nor lose digits in subnormals (|x| > 1e-15);
    False for NaN, which the float64 pass then refuses, naming the rows."""
    peak = max(float(block.max(initial=0.0)), -float(block.min(initial=0.0)))
    return peak == 0.0 or 1e-15 < peak < 1e17


def _sweep_tile(blocks: LayerBlocks, plan: _Plan, start: int, backend: Backend, bar: Progress,
                sums: _Sums | None) -> tuple[np.ndarray, _Sums]:
    """One pass: rows ``start:start+tile`` of the Gram matrix of the shifted
    rows (of ``z`` for float32 products). The first pass (``sums`` None) also
    fixes the shift, sums every row and its squares, and checks float32's range."""
    stop = min(start + plan.tile, plan.m)
    dtype = np.float32 if plan.single else np.float64
    gram = GramSum(backend, (stop - start, plan.m), plan.single)
    first, whole = sums is None, start == 0 and stop == plan.m
    for k, block in enumerate(blocks.columns(plan.units, bar, check=plan.index is not None, dtype=dtype)):
        if plan.index is not None:
            block = _class_block(block, plan.index, plan.counts).astype(dtype, copy=False)
        if sums is None:
            sums = _Sums(_shift(block, plan.metric), np.zeros(plan.m), np.zeros(plan.m))
        block -= np.asarray(sums.shift, dtype=dtype).reshape(-1, 1) if np.ndim(sums.shift) else dtype(sums.shift)
        if first:
            sums.s += block.sum(axis=1, dtype=np.float64)
            if not whole:   # else the diagonal of the Gram matrix
                sums.q += np.einsum("ij,ij->i", block, block, dtype=np.float64)
            if plan.single and not _fits_float32(block):   # later passes read the same blocks
                raise _OutOfFloat32
        if plan.single:
            sums.mean_rows.take_out(block, k)
        device_block = backend.put(block)
        gram.add(device_block if whole else device_block[start:stop], device_block)
    bar.passes += 1
    if first and plan.index is None:
        blocks.check_sums(sums.s)
    gram = sums.mean_rows.add_back(gram.result(), start, stop)
    if first and whole:
        sums.q[:] = np.diag(gram)
    return gram, sums


def _plan(blocks: LayerBlocks, metric: str, by: str, rows: np.ndarray, budget: int, out: Any,
          precision: str) -> _Plan:
    index, labels, _ = _conditions(blocks.store, rows, by)
    m = len(labels)
    if m < 2:
        what = "classes" if by == "class" else "images"
        raise TooFewRowsError(f"an RDM needs at least 2 {what}; the rows selected hold {m}")
    counts = None if index is None else np.bincount(index, minlength=m)
    single = precision == "float32" or (precision == "auto" and metric != "euclidean")
    per_unit = 0 if index is None else 8 * m   # the class means of a block
    units = column_units(blocks.n, int(budget * READ_SHARE), extra=per_unit)
    per_row = 8 * m   # a row of the float64 sum; with float32 products its float32 part where it has
    if single:        # a part of its own (more units than one part sums), and what _Sums keeps per block
        per_row += 4 * m * (blocks.units > GramSum.FLUSH_UNITS) + MeanRows.BYTES * blocks.column_count(units)
    tile = tile_rows(m, budget, per_row)
    if tile < m and out is None:
        raise MemoryBudgetError(f"the {m}×{m} RDM takes {human(per_row * m)}, more than max_memory allows: "
                                "pass out=PATH to compute it in tiles and write it there")
    return _Plan(metric, index, counts, m, tile, units, single)


def rdm(store: Store | Any, layer: str, *, metric: str = "correlation", by: str = "image", rows: Any = None,
        max_memory: int | str = "2GB", out: Any = None, device: str = "cpu", precision: str = "auto",
        progress: bool = False) -> "xarray.DataArray":
    """The representational dissimilarity matrix of a layer, exact, in bounded memory.

    Args:
        store: an open store or its path.
        layer: a layer name; each row is flattened to one vector of p units.
        metric: ``correlation`` (1 − Pearson r), ``cosine`` (1 − cosine
            similarity) or ``euclidean`` (‖x − y‖₂).
        by: ``image`` (one row per image) or ``class`` (class means).
        rows: rows to use, in this order (default every row).
        max_memory: budget, e.g. ``"2GB"``; blocks and the result stay within it.
        out: a Zarr path: write the result there (required when it does not
            fit the budget) and return it lazily.
        device: ``cpu`` (NumPy) or a torch device (``cuda``) for the Gram blocks.
        precision: ``auto`` (float32 products summed in float64 for correlation
            and cosine, errors of a few 1e-7; float64 for euclidean),
            ``float64`` (errors near 1e-15, twice the time) or ``float32``.
        progress: show a progress bar over the reads.

    Returns:
        A DataArray with dims ``image``/``image_`` (or ``class``/``class_``),
        file (class) names as coordinates, ``attrs`` metric, layer, store, passes.
    """
    if metric not in METRICS:
        raise BadOptionError(f"metric {metric!r}: use one of {', '.join(METRICS)}")
    if by not in BY:
        raise BadOptionError(f"by {by!r}: use image or class")
    if precision not in PRECISIONS:
        raise BadOptionError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    budget, backend = parse_memory(max_memory), Backend(device)
    with opened(store) as st:
        chosen = select_rows(st, rows, minimum=1 if by == "class" else 2)
        blocks = LayerBlocks(st, layer, chosen)
        plan = _plan(blocks, metric, by, chosen, budget, out, precision)
        _, labels, class_names = _conditions(st, chosen, by)
        bar = Progress(description=f"rdm {blocks.layer}", enabled=progress)
        attrs = {"metric": metric, "layer": blocks.layer, "store": str(st.path), "by": by,
                 "rows": len(chosen), "units": blocks.units, "products": "float32" if plan.single else "float64"}
        template = _as_dataarray(None, by, labels, class_names, attrs, plan.m, plan.tile)
        target = None if out is None else _open_out(out, template)
        try:
            template, sums = _sweeps(blocks, plan, backend, bar, template, target)
        except _OutOfFloat32:   # values beyond float32's comfortable range: start again in float64
            bar.passes += 1
            plan = _plan(blocks, metric, by, chosen, budget, out, "float64")
            template.attrs["products"] = "float64"
            template, sums = _sweeps(blocks, plan, backend, bar, template, target)
        bar.close()
        _warn_degenerate(sums.q, sums.s, blocks.units, metric, labels)
        done = {"passes": bar.passes, "seconds": round(bar.seconds, 3), "products": template.attrs["products"]}
        if target is None:
            template.attrs.update(done)
            return template
        target.attrs.update(done)
        return _reopen(out)


def _sweeps(blocks: LayerBlocks, plan: _Plan, backend: Backend, bar: Progress, template: "xarray.DataArray",
            target: Any) -> tuple["xarray.DataArray", _Sums]:
    """Every tile of the RDM: into ``template`` (one tile) or written to ``target``."""
    sums = None
    for start in range(0, plan.m, plan.tile):
        gram, sums = _sweep_tile(blocks, plan, start, backend, bar, sums)
        tile = _finish(gram, sums.s, sums.q, start, plan.metric, blocks.units)
        if target is None:
            template = template.copy(data=tile)
        else:
            target[start:start + len(tile)] = tile
    return template, sums


def _open_out(out: Any, template: "xarray.DataArray") -> Any:
    """Create ``out`` as a Zarr store xarray opens (the RDM and its coordinates),
    and return the RDM's array, into which tiles are written."""
    import zarr

    from ..store import is_store
    if is_store(out):
        raise BadOptionError(f"out={out} is an actstore store: write the RDM to another path")
    template.to_dataset(name="rdm").to_zarr(str(out), mode="w", compute=False, consolidated=False)
    return zarr.open_group(str(out), mode="r+")["rdm"]


def _reopen(out: Any) -> "xarray.DataArray":
    import xarray as xr
    return xr.open_zarr(str(out), consolidated=False)["rdm"]


def _as_dataarray(values: Any, by: str, labels: list[str], class_names: np.ndarray,
                  attrs: dict[str, Any], m: int, tile: int) -> "xarray.DataArray":
    """The result with its coordinates; ``values`` None: a lazy placeholder
    in chunks of whole rows (the template of a result written to ``out``)."""
    import xarray as xr
    if values is None:
        import dask.array as da
        rows = max(1, min(m, (8 * 2**20) // (8 * m)))
        values = da.zeros((m, m), chunks=(rows, m))
    dims = (by, f"{by}_")
    text = [str(label) for label in labels]   # object strings: variable length in every file format
    coords: dict[str, Any] = {dims[0]: np.asarray(text, dtype=object), dims[1]: np.asarray(text, dtype=object)}
    if by == "image":
        names = np.asarray([str(name) for name in class_names], dtype=object)
        coords["class_name"], coords["class_name_"] = (dims[0], names), (dims[1], names)
    return xr.DataArray(values, dims=dims, coords=coords, name=f"rdm {attrs['layer']}", attrs=attrs)
