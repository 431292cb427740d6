"""The original THINGSvision layout: ``<out>/<model>/<module>/activations.txt`` and friends.

- :mod:`.files`: the layout's files, and :class:`LegacyFiles`, the row sink
  that ``extract`` (an out path without a store suffix) and ``export`` write;
- :mod:`.convert`: export a store's layer to the layout, import the layout into a store;
- :mod:`.thingsvision`: the original functions under their original names.

Every name this module had in 0.2 is still here.
"""
from .convert import ExportResult, ImportResult, export_layer, import_legacy
from .files import SLICE_FMT, LegacyFiles, slice_format, split_bounds
from .files import LegacyFiles as LegacyWriter
from .thingsvision import merge_activations, slices2tensor, split_activations, tensor2slices

__all__ = ["ExportResult", "ImportResult", "LegacyFiles", "LegacyWriter", "SLICE_FMT", "export_layer", "import_legacy",
           "merge_activations", "slice_format", "slices2tensor", "split_activations", "split_bounds",
           "tensor2slices"]
