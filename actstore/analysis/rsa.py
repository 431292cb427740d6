"""RSA: the correlation of two RDMs' upper triangles, with a permutation
p-value and a bootstrap interval. Follows Kriegeskorte et al. (2008);
Kendall's tau-a as in Nili et al. (2014)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadOptionError
from .stats import correlate, upper


@dataclass
class RSAResult:
    """An RSA correlation with its permutation p-value and bootstrap CI."""

    r: float
    p_value: float
    ci: tuple[float, float]
    method: str
    permutations: int
    seed: int | None

    def __float__(self) -> float:
        return float(self.r)


def _square(rdm_value: Any, name: str) -> np.ndarray:
    values = np.asarray(getattr(rdm_value, "values", rdm_value), dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] < 3:
        raise BadOptionError(f"{name} must be a square RDM of at least 3×3, got shape {values.shape}")
    return values


def compare_rdms(a: Any, b: Any, method: str = "spearman", *, permutations: int | None = None,
                 seed: int | None = 0, confidence: float = 0.95) -> float | RSAResult:
    """RSA: the correlation of two RDMs' upper triangles (diagonal excluded).

    Args:
        a, b: RDMs as DataArrays or plain arrays (e.g. a brain RDM from ``.npy``), same shape.
        method: ``spearman``, ``pearson`` or ``kendall_tau_a``.
        permutations: if given, also a permutation p-value (conditions of ``b``
            permuted, rows and columns together) and a bootstrap CI over conditions.
        seed: seed of the permutations and bootstrap samples.
        confidence: level of the percentile bootstrap interval.

    Returns:
        The correlation as a float, or an :class:`RSAResult` with permutations.
    """
    a, b = _square(a, "a"), _square(b, "b")
    if a.shape != b.shape:
        raise BadOptionError(f"the RDMs differ in shape: {a.shape} and {b.shape}")
    r = correlate(upper(a), upper(b), method)
    if permutations is None:
        return r
    rng = np.random.default_rng(seed)
    n = len(a)
    null = np.array([correlate(upper(a), upper(b[np.ix_(p, p)]), method)
                     for p in (rng.permutation(n) for _ in range(permutations))])
    p_value = (1 + np.sum(null >= r)) / (1 + permutations)
    boot = []
    for _ in range(permutations):
        pick = np.sort(rng.integers(0, n, n))
        i, j = np.triu_indices(n, 1)
        keep = pick[i] != pick[j]
        boot.append(correlate(a[pick[i[keep]], pick[j[keep]]], b[pick[i[keep]], pick[j[keep]]], method))
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(boot, [tail, 100 - tail])
    return RSAResult(float(r), float(p_value), (float(low), float(high)), method, permutations, seed)
