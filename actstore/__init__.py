"""actstore: hidden-unit activations of vision models, streamed into one chunked,
compressed Zarr or HDF5 store with file names and targets beside them.

Reading a store never imports torch; extraction does, on first use.

Example:
    >>> import actstore
    >>> actstore.extract(model_name="alexnet", module_names=["features.11"],
    ...                  in_path="images", out_path="alexnet.zarr")        # doctest: +SKIP
    >>> with actstore.open_store("alexnet.zarr") as store:                  # doctest: +SKIP
    ...     store["features.11"][:4].shape
    (4, 256, 13, 13)
"""
from __future__ import annotations

import importlib

from ._version import __version__  # noqa: E402
from .errors import UserError  # noqa: E402
from .store import Store, open_store  # noqa: E402

# Names whose modules import torch: loaded when first used.
_LAZY = {"extract": "extract", "ExtractOptions": "extract", "Extractor": "capture", "ExtractResult": "extract",
         "ImageSet": "images", "Model": "models", "from_module": "models",
         "load_model": "models", "module_tree": "models"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'actstore' has no attribute {name!r}")


__all__ = ["ExtractOptions", "ExtractResult", "Extractor", "ImageSet", "Model", "Store", "UserError", "__version__",
           "extract", "from_module", "load_model", "module_tree", "open_store"]
