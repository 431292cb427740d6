"""Representational analysis straight from a store, in bounded memory:
class means, RDMs and RSA, CKA, and PCA, with pictures.

Every function takes an open store (``open_store(...)``) or a path and a
layer name, and returns an ``xarray.DataArray`` (or a small result holding
them) whose coordinates name the files, classes or layers. Reading a store
never imports torch; ``device="cuda"`` does, for the Gram blocks only.

Example:
    >>> from actstore.analysis import rdm, compare_rdms, cka     # doctest: +SKIP
    >>> d = rdm("alexnet.zarr", "features.11", metric="correlation")
    >>> compare_rdms(d, np.load("brain_rdm.npy"), permutations=1000)
    >>> cka("alexnet.zarr", "features.11", layer_b="classifier.4")
"""
from __future__ import annotations

import importlib

from .cka import CKAResult, cka, cka_matrix
from .pca import PCAResult, pca
from .rdm import class_means, rdm
from .rsa import RSAResult, compare_rdms

# matplotlib is imported only when a picture is asked for.
_PLOTS = ("plot_rdm", "plot_cka", "plot_pca")


def __getattr__(name: str):
    if name in _PLOTS:
        return getattr(importlib.import_module(".plots", __name__), name)
    raise AttributeError(f"module 'actstore.analysis' has no attribute {name!r}")


__all__ = ["CKAResult", "PCAResult", "RSAResult", "cka", "cka_matrix", "class_means", "compare_rdms", "pca",
           "plot_cka", "plot_pca", "plot_rdm", "rdm"]
