"""actstore: hidden-unit activations of vision models, streamed into one chunked,
compressed Zarr or HDF5 store with file names and targets beside them.

Example:
    >>> import actstore
    >>> actstore.extract(model_name="alexnet", module_names=["features.11"],
    ...                  in_path="images", out_path="alexnet.zarr")        # doctest: +SKIP
    >>> with actstore.open_store("alexnet.zarr") as store:                  # doctest: +SKIP
    ...     store["features.11"][:4].shape
    (4, 256, 13, 13)
"""
__version__ = "0.1.0"

from .errors import UserError  # noqa: E402
from .images import ImageSet  # noqa: E402
from .models import Model, from_module, load_model, module_tree  # noqa: E402
from .store import Store, open_store  # noqa: E402
from .extract import Extractor, ExtractResult, extract  # noqa: E402

__all__ = ["ExtractResult", "Extractor", "ImageSet", "Model", "Store", "UserError", "__version__",
           "extract", "from_module", "load_model", "module_tree", "open_store"]
