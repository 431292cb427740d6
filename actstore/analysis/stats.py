"""Correlations of RDM vectors for RSA: Pearson, Spearman and Kendall's tau-a."""
from __future__ import annotations

import numpy as np

from ..errors import BadOptionError

METHODS = ("spearman", "pearson", "kendall_tau_a")


def upper(square: np.ndarray) -> np.ndarray:
    """The upper triangle of a square matrix, diagonal excluded, row by row."""
    i, j = np.triu_indices(len(square), 1)
    return np.asarray(square)[i, j]


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = average[group]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """``Σ(x−x̄)(y−ȳ) / sqrt(Σ(x−x̄)² Σ(y−ȳ)²)``; NaN when either is constant."""
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.dot(x, x) * np.dot(y, y))
    return float(np.dot(x, y) / denominator) if denominator > 0 else float("nan")


def _tied_pairs(values: np.ndarray) -> int:
    _, counts = np.unique(values, return_counts=True)
    return int(np.sum(counts * (counts - 1) // 2))


def kendall_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a: ``(concordant − discordant) / (m(m−1)/2)`` over all
    pairs of the m entries, ties counting as neither (Nili et al. 2014).

    The numerator comes from tau-b (``scipy.stats.kendalltau``, O(m log m)):
    ``S = tau_b · sqrt((n0 − t_x)(n0 − t_y))`` with ``t`` the tied pairs.
    """
    from scipy.stats import kendalltau
    m = len(x)
    n0 = m * (m - 1) / 2
    tx, ty = _tied_pairs(x), _tied_pairs(y)
    if n0 == 0 or tx == n0 or ty == n0:
        return float("nan")
    tau_b = kendalltau(x, y, variant="b").statistic
    return float(tau_b * np.sqrt((n0 - tx) * (n0 - ty)) / n0)


def correlate(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """One of :data:`METHODS` between two vectors; pairs where either is NaN are left out."""
    if method not in METHODS:
        raise BadOptionError(f"method {method!r}: use one of {', '.join(METHODS)}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = np.asarray(x[keep], dtype=np.float64), np.asarray(y[keep], dtype=np.float64)
    if method == "pearson":
        return pearson(x, y)
    if method == "spearman":
        return pearson(rank(x), rank(y))
    return kendall_tau_a(x, y)
