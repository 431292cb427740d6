"""The original THINGSvision layout: ``<out>/<model>/<module>/activations.txt`` and friends.

- :mod:`.files`: the layout's files, and :class:`LegacyFiles`, the row sink
  that ``extract`` (an out path without a store suffix) and ``export`` write;
- :mod:`.export` and :mod:`.convert`: a store's layer into the layout, and the layout into a store;
- :mod:`.thingsvision`: the original functions under their original names.

Every name this module had in 0.2 is still here.
"""
from .convert import ImportResult, import_legacy
from .export import ExportResult, export_layer
from .files import SLICE_FMT, LegacyFiles, slice_format, split_bounds
from .files import LegacyFiles as LegacyWriter
from .thingsvision import merge_activations, slices2tensor, split_activations, tensor2slices

__all__ = ["ExportResult", "ImportResult", "LegacyFiles", "LegacyWriter", "SLICE_FMT", "export_layer", "import_legacy",
           "merge_activations", "slice_format", "slices2tensor", "split_activations", "split_bounds",
           "tensor2slices"]
