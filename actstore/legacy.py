"""Earlier home of the original-layout functions, kept so existing imports work.

The THINGSvision functions live in :mod:`actstore.thingsvision`, export and
import in :mod:`actstore.legacy_io`, the writer backend in
:mod:`actstore.store.legacy_files`.
"""
from .legacy_io import ExportResult, ImportResult, export_layer, import_legacy
from .store.legacy_files import SLICE_FMT, LegacyFilesWriter as LegacyWriter, slice_format, split_bounds
from .thingsvision import merge_activations, slices2tensor, split_activations, tensor2slices

__all__ = ["ExportResult", "ImportResult", "LegacyWriter", "SLICE_FMT", "export_layer", "import_legacy",
           "merge_activations", "slice_format", "slices2tensor", "split_activations", "split_bounds",
           "tensor2slices"]
