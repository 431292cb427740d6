"""Linear CKA between layers of one store or two, exact in bounded memory or by minibatches.

Linear CKA (Kornblith et al. 2019) of column-centred ``X`` (n×p) and ``Y`` (n×q)
is ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K = XXᵀ``, ``L = YYᵀ`` and
``HSIC(K, L) = tr(KHLH)``. The debiased form uses the unbiased estimator of
Song et al. (2012), with ``K̃``, ``L̃`` the Gram matrices with zero diagonal:
``HSIC_u = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3))``.

Every estimate is written in terms of a few pair statistics (``tr(KL)``,
``(K1)·(L1)``, diagonals and their sums) which two forms accumulate exactly:

- *feature form*: ``tr(KL) = ‖XᵀY‖²_F`` and friends from ``XᵀY`` (p×q), one
  pass over row blocks, when the units are few;
- *Gram form*: tiles of rows of ``K`` and ``L`` from column blocks, one pass per
  tile, when the images are few (or the units too many for the feature form).

``method="minibatch"`` (Nguyen et al. 2021) averages ``HSIC_u`` over random
minibatches of rows, for when neither exact form is affordable.
"""
from __future__ import annotations

import itertools
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import BadOptionError, StoresDifferError
from ..store import Store
from .blocks import (
    READ_SHARE,
    LayerBlocks,
    Progress,
    column_units,
    opened,
    parse_memory,
    select_rows,
    tile_rows,
)
from .products import Backend

if TYPE_CHECKING:
    import xarray

STATS = ("tr", "rr", "sa", "sb", "dd", "dsa", "dsb", "rdb", "dra")


class CKAResult(float):
    """A CKA value (a float) that records how it was computed."""

    method: str
    form: str
    debiased: bool
    rows: int
    passes: int
    batch_size: int | None
    seed: int | None

    def __new__(cls, value: float, **info: Any) -> "CKAResult":
        result = super().__new__(cls, value)
        for key in ("method", "form", "debiased", "rows", "passes", "batch_size", "seed"):
            setattr(result, key, info.get(key))
        return result


def hsic(s: dict[str, float], n: int, debiased: bool) -> float:
    """HSIC from pair statistics (``tr`` = tr(KL), ``rr`` = (K1)·(L1), ``sa``
    = 1ᵀK1, ``dd`` = diag K·diag L, ``dsa`` = Σ diag K, ``rdb`` = (K1)·diag L, ...)."""
    if not debiased:
        return s["tr"] - 2 * s["rr"] / n + s["sa"] * s["sb"] / n**2
    t1 = s["tr"] - s["dd"]
    t2 = (s["sa"] - s["dsa"]) * (s["sb"] - s["dsb"])
    t3 = s["rr"] - s["rdb"] - s["dra"] + s["dd"]
    return (t1 + t2 / ((n - 1) * (n - 2)) - 2 * t3 / (n - 2)) / (n * (n - 3))


def cka_value(xy: float, xx: float, yy: float, guard: str) -> float:
    """``xy / sqrt(xx·yy)``; NaN, with a warning naming the layers, when either
    self-HSIC is not positive (a constant layer; or a debiased estimate on too
    few rows, which can be negative, where the square root would give NaN).
    A debiased estimate of a near-zero similarity may be slightly negative: kept."""
    if not (np.isfinite(xy) and np.isfinite(xx) and np.isfinite(yy)) or xx <= 0 or yy <= 0:
        warnings.warn(f"CKA of {guard} is undefined (HSIC of a layer with itself is {min(xx, yy):.3g}: "
                      "a constant layer, or too few rows for the debiased estimate); returning NaN",
                      RuntimeWarning, stacklevel=4)
        return float("nan")
    return float(min(xy / np.sqrt(xx * yy), 1.0))


def _feature_stats(layers: list[LayerBlocks], budget: int, bar: Progress) -> dict[tuple[int, int], dict]:
    """One pass over row blocks: every pair's statistics from ``XᵀY`` and the row norms."""
    n = layers[0].n
    width = sum(b.units for b in layers)
    step = max(1, int(budget * READ_SHARE) // max(1, 16 * width))
    shift: list[np.ndarray] = []
    acc = {"S": [np.zeros(b.units) for b in layers],
           "C": {(a, b): np.zeros((layers[a].units, layers[b].units)) for a, b in _pairs(len(layers))},
           "w": {(a, b): np.zeros(layers[a].units) for a in range(len(layers)) for b in range(len(layers))},
           "dd": np.zeros((len(layers), len(layers))), "d": np.zeros(len(layers))}
    starts = range(0, n, step)
    bar.add(len(starts) * len(layers))
    for start in starts:
        positions = layers[0].order[start:start + step]
        blocks = []
        for k, b in enumerate(layers):
            x = b.read_rows(positions)
            if len(shift) <= k:
                shift.append(x.mean(axis=0))
            x -= shift[k]
            blocks.append(x)
            bar.step()
        _accumulate_features(acc, blocks)
    bar.passes += 1
    return {pair: _pair_from_features(acc, *pair) for pair in _pairs(len(layers))}


def _accumulate_features(acc: dict, blocks: list[np.ndarray]) -> None:
    norms = [np.einsum("ij,ij->i", x, x) for x in blocks]
    for k, x in enumerate(blocks):
        acc["S"][k] += x.sum(axis=0)
        acc["d"][k] += norms[k].sum()
    for (a, b), c in acc["C"].items():
        c += blocks[a].T @ blocks[b]
    for (a, b), w in acc["w"].items():
        w += blocks[a].T @ norms[b]
    acc["dd"] += np.array([[na @ nb for nb in norms] for na in norms])


def _pair_from_features(acc: dict, a: int, b: int) -> dict[str, float]:
    c, sa_vec, sb_vec = acc["C"][(a, b)], acc["S"][a], acc["S"][b]
    return {"tr": float(np.sum(c * c)), "rr": float(sa_vec @ c @ sb_vec), "sa": float(sa_vec @ sa_vec),
            "sb": float(sb_vec @ sb_vec), "dd": float(acc["dd"][a, b]), "dsa": float(acc["d"][a]),
            "dsb": float(acc["d"][b]), "rdb": float(sa_vec @ acc["w"][(a, b)]),
            "dra": float(sb_vec @ acc["w"][(b, a)])}


def _gram_stats(layers: list[LayerBlocks], budget: int, bar: Progress, backend: Backend) -> dict:
    """Tiles of rows of every layer's centred Gram matrix, one pass per tile."""
    n, count = layers[0].n, len(layers)
    tile = tile_rows(n, budget, 8 * n * count)   # the tile of every layer's Gram matrix
    units = column_units(n, int(budget * READ_SHARE))
    tr = {pair: 0.0 for pair in _pairs(count)}
    rowsum, diag = np.zeros((count, n)), np.zeros((count, n))
    for start in range(0, n, tile):
        stop, kept = min(n, start + tile), {}
        for k, b in enumerate(layers):
            gram = backend.zeros((stop - start, n))
            whole = start == 0 and stop == n
            for block in b.columns(units, bar):
                block -= block.mean(axis=0)
                device_block = backend.put(block)
                backend.add_product(gram, device_block if whole else device_block[start:stop], device_block)
            gram = backend.numpy(backend.symmetric(gram) if whole else gram)
            rowsum[k, start:stop] = gram.sum(axis=1)
            diag[k, start:stop] = gram[np.arange(stop - start), np.arange(start, stop)]
            _tile_traces(tr, k, gram, kept)
        bar.passes += 1
    return {pair: _pair_from_gram(tr[pair], rowsum, diag, *pair) for pair in _pairs(count)}


def _tile_traces(tr: dict, k: int, gram: np.ndarray, keep: dict) -> None:
    """Add this tile's ``Σ K_a ∘ K_b`` for every pair ending at layer ``k``."""
    keep[k] = gram
    for a in range(k + 1):
        if (a, k) in tr:
            tr[(a, k)] += float(np.einsum("ij,ij->", keep[a], gram))


def _pair_from_gram(trace: float, rowsum: np.ndarray, diag: np.ndarray, a: int, b: int) -> dict[str, float]:
    return {"tr": trace, "rr": float(rowsum[a] @ rowsum[b]), "sa": float(rowsum[a].sum()),
            "sb": float(rowsum[b].sum()), "dd": float(diag[a] @ diag[b]), "dsa": float(diag[a].sum()),
            "dsb": float(diag[b].sum()), "rdb": float(rowsum[a] @ diag[b]), "dra": float(diag[a] @ rowsum[b])}


def _pairs(count: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(count) for b in range(a, count)]


def _minibatch(layers: list[LayerBlocks], batch_size: int, seed: int, budget: int, bar: Progress) -> dict:
    """Per pair, ``HSIC_u`` averaged over minibatches of a random permutation of rows."""
    n = layers[0].n
    size = min(batch_size, n)
    if size < 4:
        raise BadOptionError(f"batch_size {batch_size}: the unbiased HSIC needs batches of at least 4 rows")
    order = np.random.default_rng(seed).permutation(n)
    batches = [order[i:i + size] for i in range(0, n - size + 1, size)]
    total = {pair: 0.0 for pair in _pairs(len(layers))}
    bar.add(len(batches) * len(layers))
    for batch in batches:
        grams = []
        for b in layers:
            grams.append(b.gram(np.sort(batch), column_units(size, int(budget * READ_SHARE))))
            bar.step()
        for a, b in total:
            stats = _pair_from_gram(float(np.sum(grams[a] * grams[b])), np.array([g.sum(1) for g in grams]),
                                    np.array([np.diag(g) for g in grams]), a, b)
            total[(a, b)] += hsic(stats, size, True) / len(batches)
    bar.passes += 1
    return total


def _estimates(layers: list[LayerBlocks], *, debiased: bool, method: str, budget: int, batch_size: int,
               seed: int, backend: Backend, bar: Progress) -> tuple[dict, str]:
    """HSIC of every pair of ``layers`` and the form used."""
    n = layers[0].n
    if method == "minibatch":
        return _minibatch(layers, batch_size, seed, budget, bar), "minibatch"
    if method != "exact":
        raise BadOptionError(f"method {method!r}: use exact or minibatch")
    if debiased and n < 4:
        raise BadOptionError(f"the debiased CKA needs at least 4 rows, got {n}")
    width = sum(b.units for b in layers)
    feature_bytes = 8 * width * width
    use_features = width <= n and feature_bytes <= budget * (1 - READ_SHARE)
    stats = _feature_stats(layers, budget, bar) if use_features else _gram_stats(layers, budget, bar, backend)
    return {pair: hsic(s, n, debiased) for pair, s in stats.items()}, "feature" if use_features else "gram"


def _align(a: Store, b: Store | None, rows: Any) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``a`` and the rows of ``b`` holding the same files, in ``a``'s order."""
    if b is None or b is a:
        chosen = select_rows(a, None if isinstance(rows, str) else rows)
        return chosen, chosen
    row_of = {name: i for i, name in enumerate(b.file_names)}
    if isinstance(rows, str) and rows != "common":
        raise BadOptionError(f"rows={rows!r}: give row indices, None or 'common'")
    if rows == "common":
        candidates = np.array([i for i, name in enumerate(a.file_names) if name in row_of], dtype=np.int64)
    else:
        candidates = select_rows(a, rows)
        only_a = sum(name not in row_of for name in a.file_names[candidates])
        only_b = len(set(b.file_names) - set(a.file_names[candidates])) if rows is None else 0
        if only_a or only_b:
            raise StoresDifferError(f"{a.path} and {b.path} hold different images: {only_a} file name(s) only "
                                    f"in the first, {only_b} only in the second; pass rows='common' (--common) to use "
                                    "the images they share")
    rows_a = select_rows(a, candidates)
    return rows_a, select_rows(b, np.array([row_of[name] for name in a.file_names[rows_a]], dtype=np.int64))


def cka(store_a: Store | Any, layer_a: str, store_b: Store | Any = None, layer_b: str | None = None, *,
        debiased: bool = False, method: str = "exact", rows: Any = None, max_memory: int | str = "2GB",
        batch_size: int = 1024, seed: int = 0, device: str = "cpu", progress: bool = False) -> CKAResult:
    """Linear CKA (Kornblith et al. 2019) between two layers, of one store or two.

    Args:
        store_a, layer_a: the first store (open or a path) and layer.
        store_b, layer_b: the second; ``store_b`` None means ``store_a``,
            ``layer_b`` None means ``layer_a`` (two stores, same layer).
        debiased: use the unbiased HSIC estimator (Song et al. 2012).
        method: ``exact`` (feature or Gram form, whichever is cheaper) or
            ``minibatch`` (Nguyen et al. 2021: unbiased HSIC averaged over batches).
        rows: rows of ``store_a`` to use; ``"common"`` with two stores: the images both hold.
        max_memory: budget, e.g. ``"2GB"``.
        batch_size, seed: of ``minibatch`` (recorded in the result).
        device: ``cpu`` (NumPy) or a torch device for the Gram blocks.
        progress: show a progress bar.

    Returns:
        A :class:`CKAResult` (a float in [0, 1]) recording method, form, rows, passes.
    """
    layer_b = layer_a if layer_b is None else layer_b
    budget, backend = parse_memory(max_memory), Backend(device)
    with opened(store_a) as a, (opened(store_b) if store_b is not None else opened(a)) as b:
        rows_a, rows_b = _align(a, b, rows)
        layers = [LayerBlocks(a, layer_a, rows_a), LayerBlocks(b, layer_b, rows_b)]
        bar = Progress(description="cka", enabled=progress)
        estimates, form = _estimates(layers, debiased=debiased, method=method, budget=budget,
                                     batch_size=batch_size, seed=seed, backend=backend, bar=bar)
        bar.close()
        value = cka_value(estimates[(0, 1)], estimates[(0, 0)], estimates[(1, 1)], f"{layer_a} and {layer_b}")
        minibatch = method == "minibatch"
        return CKAResult(value, method=method, form=form, debiased=debiased or minibatch, rows=len(rows_a),
                         passes=bar.passes, batch_size=min(batch_size, len(rows_a)) if minibatch else None,
                         seed=seed if minibatch else None)


def cka_matrix(store: Store | Any, layers: Sequence[str], other: Store | Any = None,
               other_layers: Sequence[str] | None = None, *, debiased: bool = False, method: str = "exact",
               rows: Any = None, max_memory: int | str = "2GB", batch_size: int = 1024, seed: int = 0,
               device: str = "cpu", progress: bool = False) -> "xarray.DataArray":
    """CKA of every layer of ``layers`` with every layer of ``other_layers``
    (default ``layers``), each store read once per pass for all its layers.

    Returns:
        A DataArray with dims ``layer`` and ``layer_``, the layer names as
        coordinates; attrs record the stores, method, form, rows and passes.
    """
    import xarray as xr
    budget, backend = parse_memory(max_memory), Backend(device)
    names_b = list(layers if other_layers is None else other_layers)
    with opened(store) as a, (opened(other) if other is not None else opened(a)) as b:
        rows_a, rows_b = _align(a, b, rows)
        blocks = [LayerBlocks(a, name, rows_a) for name in layers]
        blocks += [LayerBlocks(b, name, rows_b) for name in names_b] if (other is not None or other_layers) else []
        second = len(layers) if len(blocks) > len(layers) else 0
        bar = Progress(description="cka", enabled=progress)
        estimates, form = _estimates(blocks, debiased=debiased, method=method, budget=budget,
                                     batch_size=batch_size, seed=seed, backend=backend, bar=bar)
        bar.close()
        values = np.empty((len(layers), len(names_b)))
        for i, j in itertools.product(range(len(layers)), range(len(names_b))):
            x, y = i, second + j
            key = (min(x, y), max(x, y))
            values[i, j] = cka_value(estimates[key], estimates[(x, x)], estimates[(y, y)],
                                     f"{layers[i]} and {names_b[j]}")
        attrs = {"store": str(a.path), "other": str(b.path), "method": method, "form": form,
                 "debiased": int(debiased), "rows": len(rows_a), "passes": bar.passes, "seconds": round(bar.seconds, 3)}
        return xr.DataArray(values, dims=("layer", "layer_"), coords={"layer": list(layers), "layer_": names_b},
                            name="cka", attrs=attrs)
