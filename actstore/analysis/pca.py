"""PCA of a layer straight from a store, in bounded memory.

With ``Xc`` the column-centred (n×p) layer, the components are the top right
singular vectors of ``Xc`` and the explained variances ``s²/(n−1)`` (as
scikit-learn's ``PCA``); ratios are taken to the total variance
``Σ_j var(x_j)``, computed exactly in the first pass. Three ways, chosen by
the shapes and the budget (``method="auto"``):

- ``covariance``: ``C = XcᵀXc/(n−1)`` (p×p) in one pass over row blocks, then
  its eigenvectors; when the units are few. Exact.
- ``gram``: ``XcXcᵀ`` (n×n) in one pass over unit blocks, its eigenvectors
  ``U``, then ``V = XcᵀU/s`` in a second pass; when the images are few. Exact.
- ``randomized``: randomized SVD with power iterations (Halko et al. 2011,
  Alg. 4.4): ``Y = XcΩ``, then ``q`` times ``Q ← qr(Xc qr(XcᵀQ))``, then the
  SVD of ``QᵀXc``. When the layer (as float32) fits the budget it is read
  once and held: the power iterations multiply in float32 (they only find
  the subspace), over ``max(k + 10, 2k)`` columns, until the top k Ritz
  values settle, and ``QᵀXc`` is taken in float64; one pass. Otherwise
  every product is one pass over row blocks, ``2q + 2`` passes in all.

``auto`` takes ``randomized`` held in RAM when the layer fits and that
multiplies less than the exact ways would; else ``covariance`` when the
units are few; else ``gram`` when the n×n matrix fits; else ``randomized``
over the store.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadOptionError
from ..store import Store
from .blocks import READ_SHARE, LayerBlocks, Progress, column_units, opened, parse_memory, select_rows
from .products import Backend
from .scores import check_target, project, write_scores

if TYPE_CHECKING:
    import xarray

METHODS = ("auto", "covariance", "gram", "randomized")


@dataclass
class PCAResult:
    """Components (k × the layer's unit shape), explained variances and the mean."""

    components: "xarray.DataArray"
    explained_variance: "xarray.DataArray"
    explained_variance_ratio: "xarray.DataArray"
    mean: "xarray.DataArray"
    total_variance: float
    rows: np.ndarray
    method: str
    passes: int
    seconds: float
    layer: str
    store: str
    written: str | None = None
    scores: "xarray.DataArray | None" = None
    power_iterations: int | None = None     # of the randomized method

    @property
    def flat_components(self) -> np.ndarray:
        """Components as a (k, units) array, units in C order of the unit shape."""
        return self.components.values.reshape(self.components.shape[0], -1)

    def to_dataset(self) -> "xarray.Dataset":
        """Components, variances and mean in one Dataset (to save as netCDF or Zarr)."""
        import xarray as xr
        variables = {"components": self.components, "explained_variance": self.explained_variance,
                     "explained_variance_ratio": self.explained_variance_ratio, "mean": self.mean}
        attrs = {"layer": self.layer, "store": self.store, "method": self.method, "passes": self.passes,
                 "rows": len(self.rows), "total_variance": self.total_variance}
        if self.power_iterations is not None:
            attrs["power_iterations"] = self.power_iterations
        return xr.Dataset({name: value.rename(None) for name, value in variables.items()}, attrs=attrs)

    def transform(self, data: np.ndarray) -> np.ndarray:
        """Scores ``(x − mean) Vᵀ`` of rows given in the layer's shape or flat."""
        flat = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
        return (flat - self.mean.values.reshape(-1)) @ self.flat_components.T


def _shifted_pass(blocks: LayerBlocks, step: int, bar: Progress, visit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over row blocks of ``X − shift`` (shift: the first block's
    mean); ``visit(positions, xs)`` sees each block. Returns shift, Σxs, Σxs²."""
    shift, sums, squares = None, np.zeros(blocks.units), np.zeros(blocks.units)
    for positions, x in blocks.row_blocks(step, bar):
        if shift is None:
            shift = x.mean(axis=0)
        x -= shift
        sums += x.sum(axis=0)
        squares += np.einsum("ij,ij->j", x, x)
        visit(positions, x)
    bar.passes += 1
    return shift, sums, squares


def _top(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues (descending) and eigenvectors of a symmetric
    PSD matrix: Lanczos (ARPACK, to machine precision) when few are wanted of a
    large matrix, else LAPACK's full ``eigh``."""
    if 10 * k < len(matrix) and len(matrix) > 500:
        from scipy.sparse.linalg import eigsh
        values, vectors = eigsh(matrix, k, which="LA", tol=0, v0=np.ones(len(matrix)))
    else:
        values, vectors = np.linalg.eigh(matrix)
    order = np.argsort(values)[::-1][:k]
    return np.maximum(values[order], 0), vectors[:, order]


def _covariance(blocks: LayerBlocks, k: int, budget: int, bar: Progress) -> tuple:
    p, n = blocks.units, blocks.n
    cov = np.zeros((p, p))

    def visit(_, x):
        cov.__iadd__(x.T @ x)
    shift, sums, squares = _shifted_pass(blocks, blocks.row_step(int(budget * READ_SHARE)), bar, visit)
    cov -= np.outer(sums, sums) / n
    cov /= n - 1
    values, vectors = _top(cov, k)
    total = float((squares - sums * sums / n).sum() / (n - 1))
    return vectors.T, values, shift + sums / n, total


def _gram(blocks: LayerBlocks, k: int, budget: int, bar: Progress) -> tuple:
    """``XcXcᵀ`` over unit blocks, its top eigenvectors ``U``, then ``V = XcᵀU/s``:
    a second pass, unless the centred layer fits the read budget and is kept."""
    n = blocks.n
    gram, means, total, backend = np.zeros((n, n)), [], 0.0, Backend()
    read_bytes = int(budget * READ_SHARE)
    units = column_units(n, read_bytes)
    kept: list[np.ndarray] | None = [] if 8 * n * blocks.units <= read_bytes else None
    for block in blocks.columns(units, bar):
        means.append(block.mean(axis=0))
        block -= means[-1]
        total += float(np.einsum("ij,ij->", block, block))
        backend.add_product(gram, block, block)
        if kept is not None:
            kept.append(block)
    backend.symmetric(gram)
    bar.passes += 1
    values, vectors = _top(gram, k)
    del gram
    weights = (vectors * np.where(values > 0, 1 / np.sqrt(np.maximum(values, 1e-300)), 0.0)).T
    if kept is None:
        kept = (block - mean for block, mean in zip(blocks.columns(units, bar), means))
        bar.passes += 1
    parts = [weights @ block for block in kept]
    return np.hstack(parts), values / (n - 1), np.concatenate(means), total / (n - 1)


def _orthonormal(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.qr(matrix)[0]


# Held in RAM, power iterations go on until the top k singular values move
# by less than this (relative) in one iteration, at most MAX_ITERATIONS.
TOLERANCE = 1e-6
MAX_ITERATIONS = 40


def _randomized(blocks: LayerBlocks, k: int, budget: int, bar: Progress, iterations: int | None,
                seed: int) -> tuple:
    n, p = blocks.n, blocks.units
    held = np.empty((n, p), dtype=np.float32) if _holds(n, p, _width(k, n, p, True), budget) else None
    width = _width(k, n, p, held is not None)
    omega = np.random.default_rng(seed).standard_normal((p, width))
    step = blocks.row_step(int(budget * READ_SHARE), extra_per_row=16 * width)
    y = np.zeros((n, width))

    def sample(positions, x):
        y[positions] = x @ omega
        if held is not None:
            held[positions] = x
    shift, sums, squares = _shifted_pass(blocks, step, bar, sample)
    offset = sums / n                       # the mean of the shifted rows
    y -= offset @ omega
    q = _orthonormal(y)
    if held is None:
        def product(z):
            return _product(blocks, z, shift, offset, step, bar)

        def transposed(q, exact=True):
            return _transposed_product(blocks, q, shift, offset, step, bar)
    else:
        def product(z):
            return (held @ z.astype(np.float32)).astype(np.float64) - offset @ z

        def transposed(q, exact=False):
            return _held_transposed(held, q, offset, exact)
    adaptive = iterations is None
    if adaptive:
        iterations = MAX_ITERATIONS if held is not None else _iterations(k, n, p)
    done, values, settled = 0, None, False
    while done < iterations and not settled:
        z, r = np.linalg.qr(transposed(q))
        q = _orthonormal(product(z))
        done += 1
        if adaptive and held is not None:   # the singular values of R are those of XcᵀQ: Ritz values
            latest = np.linalg.svd(r, compute_uv=False)[:k]
            settled = values is not None and \
                np.max(np.abs(latest - values) / np.maximum(latest, 1e-300)) < TOLERANCE
            values = latest
    if adaptive and held is not None and not settled:
        warnings.warn(f"pca: the top {k} singular values did not settle to {TOLERANCE:g} in {done} power "
                      "iterations; method='gram' or 'covariance' is exact", RuntimeWarning, stacklevel=3)
    b = transposed(q, exact=True).T      # QᵀXc, (width, p)
    u, s, vt = np.linalg.svd(b, full_matrices=False)
    total = float((squares - sums * sums / n).sum() / (n - 1))
    return (vt[:k], s[:k] ** 2 / (n - 1), shift + offset, total), done


def _width(k: int, n: int, p: int, held: bool) -> int:
    """Columns of the randomized range finder: ``k + 10`` over the store (each
    product a pass), ``max(k + 10, 2k)`` held in RAM (more columns settle in
    fewer iterations, and products there are cheap)."""
    return min(max(k + 10, 2 * k) if held else k + 10, n, p)


def _holds(n: int, p: int, width: int, budget: int) -> bool:
    """Whether the layer as float32, with the randomized method's own
    matrices, fits the budget's result share (then it is read once)."""
    return 4 * n * p + 48 * (n + p) * width <= budget * (1 - READ_SHARE)


def _held_transposed(held: np.ndarray, q: np.ndarray, offset: np.ndarray, exact: bool) -> np.ndarray:
    """``Xcᵀ Q`` from the held float32 rows: in float32 (a power iteration), or
    ``exact`` in float64, converting a block of units at a time."""
    if not exact:
        out = (q.T.astype(np.float32) @ held).T.astype(np.float64)
    else:
        out = np.empty((held.shape[1], q.shape[1]))
        step = max(1, (32 * 2**20) // (8 * len(held)))
        for start in range(0, held.shape[1], step):
            out[start:start + step] = (q.T @ held[:, start:start + step].astype(np.float64)).T
    return out - np.outer(offset, q.sum(axis=0))


def _transposed_product(blocks: LayerBlocks, q: np.ndarray, shift: np.ndarray, offset: np.ndarray, step: int,
                        bar: Progress) -> np.ndarray:
    """``Xcᵀ Q`` in one pass, with ``Xc = (X − shift) − offset``."""
    out = np.zeros((blocks.units, q.shape[1]))
    for positions, x in blocks.row_blocks(step, bar):
        x -= shift
        out += x.T @ q[positions]
    bar.passes += 1
    return out - np.outer(offset, q.sum(axis=0))


def _product(blocks: LayerBlocks, z: np.ndarray, shift: np.ndarray, offset: np.ndarray, step: int,
             bar: Progress) -> np.ndarray:
    """``Xc Z`` in one pass."""
    out = np.zeros((blocks.n, z.shape[1]))
    for positions, x in blocks.row_blocks(step, bar):
        x -= shift
        out[positions] = x @ z
    bar.passes += 1
    return out - offset @ z


def _choose(method: str, n: int, p: int, k: int, budget: int) -> str:
    if method not in METHODS:
        raise BadOptionError(f"method {method!r}: use one of {', '.join(METHODS)}")
    if method != "auto":
        return method
    room = budget * (1 - READ_SHARE)
    width = _width(k, n, p, True)
    # Held in RAM, the randomized products (float32, half the cost) take about
    # (q + 1)·width·n·p with q near 7; the covariance np²/2, the Gram matrix n²p/2.
    if _holds(n, p, width, budget) and 8 * width < min(n, p) / 2:
        return "randomized"
    if p <= n and 16 * p * p <= room:
        return "covariance"
    if 16 * n * n <= room:
        return "gram"
    return "randomized"


def _iterations(k: int, n: int, p: int) -> int:
    """Power iterations as scikit-learn's ``n_iter="auto"``."""
    return 7 if k < 0.1 * min(n, p) else 4


def pca(store: Store | Any, layer: str, n_components: int, *, rows: Any = None, write_to: Any = None,
        max_memory: int | str = "2GB", method: str = "auto", power_iterations: int | None = None, seed: int = 0,
        scores: bool = False, progress: bool = False) -> PCAResult:
    """Principal components of a layer's flattened rows.

    Args:
        store: an open store or its path.
        layer: a layer name.
        n_components: k, at most min(rows, units).
        rows: rows that fit the components (default every row).
        write_to: a store path (new, or the same store) to which the scores of
            every written row go, as layer ``<layer>.pca<k>``, with provenance.
        max_memory: budget, e.g. ``"2GB"``.
        method: ``auto``, ``covariance``, ``gram`` or ``randomized`` (see the module).
        power_iterations, seed: of the randomized method. Default: with the layer
            held in RAM, until the top k singular values settle (to 1e-6, at
            most 40); over the store, as scikit-learn's ``n_iter="auto"``: 7 when
            k < 0.1·min(rows, units), else 4 (2q + 2 passes).
        scores: also return the scores of the fitted rows (``result.scores``;
            one more pass unless ``write_to`` projects the rows anyway).
        progress: show a progress bar.

    Returns:
        A :class:`PCAResult`; ``components`` has dims ``component`` plus the layer's unit dims.
    """
    budget = parse_memory(max_memory)
    with opened(store) as st:
        chosen = select_rows(st, rows)
        blocks = LayerBlocks(st, layer, chosen)
        if not 1 <= n_components <= min(blocks.n, blocks.units):
            raise BadOptionError(f"n_components={n_components}: give 1 to {min(blocks.n, blocks.units)} "
                                 f"({blocks.n} rows, {blocks.units} units)")
        if write_to is not None:
            check_target(st, write_to, blocks.layer, n_components)
        chosen_method = _choose(method, blocks.n, blocks.units, n_components, budget)
        bar = Progress(description=f"pca {blocks.layer}", enabled=progress)
        if chosen_method == "covariance":
            parts = _covariance(blocks, n_components, budget, bar)
        elif chosen_method == "gram":
            parts = _gram(blocks, n_components, budget, bar)
        else:
            parts, power_iterations = _randomized(blocks, n_components, budget, bar, power_iterations, seed)
        result = _result(st, blocks, chosen, chosen_method, bar, *parts)
        result.power_iterations = power_iterations if chosen_method == "randomized" else None
        if scores or write_to is not None:
            projected = project(st, result, chosen if write_to is None else st.written_rows, budget, bar)
            if scores:
                result.scores = _scores(st, chosen, projected[chosen])
            if write_to is not None:
                result.written = write_scores(st, result, write_to, projected)
        bar.close()
        result.passes, result.seconds = bar.passes, round(bar.seconds, 3)
        return result


def _scores(store: Store, rows: np.ndarray, values: np.ndarray) -> "xarray.DataArray":
    import xarray as xr
    return xr.DataArray(values, dims=("image", "component"), name="scores",
                        coords={"image": store.file_names[rows], "component": np.arange(1, values.shape[1] + 1),
                                "class_name": ("image", store.class_names[rows])})


def _result(store: Store, blocks: LayerBlocks, rows: np.ndarray, method: str, bar: Progress,
            components: np.ndarray, variance: np.ndarray, mean: np.ndarray, total: float) -> PCAResult:
    import xarray as xr
    components = components * np.where(components[np.arange(len(components)),
                                                   np.abs(components).argmax(axis=1)] < 0, -1, 1)[:, None]
    k = len(variance)
    unit_dims = store.spec(blocks.layer).dims[1:]
    coord = {"component": np.arange(1, k + 1)}
    return PCAResult(
        components=xr.DataArray(components.reshape(k, *blocks.unit_shape), dims=("component", *unit_dims),
                                coords=coord, name=f"{blocks.layer} components"),
        explained_variance=xr.DataArray(variance, dims="component", coords=coord, name="explained_variance"),
        explained_variance_ratio=xr.DataArray(variance / total if total > 0 else variance * np.nan,
                                              dims="component", coords=coord, name="explained_variance_ratio"),
        mean=xr.DataArray(mean.reshape(blocks.unit_shape), dims=unit_dims, name=f"{blocks.layer} mean"),
        total_variance=total, rows=rows, method=method, passes=bar.passes, seconds=bar.seconds,
        layer=blocks.layer, store=str(store.path))
