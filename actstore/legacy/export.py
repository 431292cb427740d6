"""From a store into the original layout: one layer as txt/npy files (:func:`export_layer`).

Streams a chunk of rows at a time, so memory does not grow with the number of
images. This module never imports torch.

Example:
    >>> from actstore.legacy import export_layer
    >>> export_layer("alexnet.zarr", "features.11", "legacy_out", "txt")    # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import IncompleteStoreError, LayerNotFoundError
from ..store import Layout, open_store
from ..store.metadata.provenance import is_complete
from ..store.read.selection import rows_or_nan
from .files import SLICE_DECIMALS, LegacyFiles


@dataclass
class ExportResult:
    """What :func:`export_layer` wrote."""

    folder: Path
    files: list[Path]
    shape: tuple[int, ...]
    skipped: int = 0     # rows of images skipped as unreadable: NaN rows, or dropped
    dropped_skipped: bool = False


def export_layer(store_path: str | Path, module_name: str, out_path: str | Path, file_format: str = "txt", *,
                 n_splits: int = 1, decimals: int = SLICE_DECIMALS, overwrite: bool = False,
                 drop_skipped: bool = False) -> ExportResult:
    """Write one layer of a store in the original layout, streaming chunk by chunk.

    Files go to ``<out_path>/<model_name>/<module_name>/``: the activations
    (``.npy`` keeps the stored shape in one array; text uses the original
    slices for 3+-D layers, ``%-7.5f`` by default, lossy), ``targets`` and
    ``file_names.txt``. Memory stays at a few chunks whatever the layer's size.
    Skipped (unreadable) images' rows are NaN, or dropped with ``drop_skipped``.

    Args:
        store_path: a complete store.
        module_name: the layer to export.
        out_path: the root folder of the original layout.
        file_format: ``txt`` or ``npy`` (``.txt``/``.npy`` accepted).
        n_splits: write ``activations_01`` ... ``activations_NN`` instead of one file.
        decimals: decimals of text slices (the original: 5).
        overwrite: replace existing ``activations*`` files in the target folder.
        drop_skipped: leave out the rows of skipped images.

    Returns:
        An :class:`ExportResult` with the folder, the files and the layer's shape.

    Raises:
        UserError: missing store or layer, incomplete store, existing files, bad options.

    Example:
        >>> export_layer("alexnet.zarr", "features.11", "out", "txt", n_splits=4)   # doctest: +SKIP
    """
    with open_store(store_path) as store:
        if module_name not in store:
            raise LayerNotFoundError(f"no layer {module_name!r} in {store_path}; layers: {', '.join(store.layers)}")
        if not is_complete(store.written, store.skipped):
            raise IncompleteStoreError(f"{store_path} is incomplete ({int(store.written.sum())}/{len(store)} "
                                       "rows): finish it by rerunning the extraction before exporting")
        layer, spec = store[module_name], store.spec(module_name)
        keep = np.flatnonzero(~store.skipped) if drop_skipped else np.arange(len(store))
        layout = Layout(n_rows=len(keep), layers=(spec,))
        writer = LegacyFiles(Path(out_path), layout, store.file_names[keep], store.targets[keep],
                             file_format=file_format, model_name=str(store.attrs.get("model_name", "model")),
                             n_splits=n_splits, decimals=decimals, nd_npy_as_text=False, overwrite=overwrite)
        try:
            step = layer.chunks[0]
            for start in range(0, len(keep), step):
                writer.write_rows(start, {module_name: rows_or_nan(layer, keep[start:start + step], store.written)})
        finally:
            writer.close()
        files = writer.files()[module_name]
        return ExportResult(folder=files[0].parent, files=files, shape=(len(keep), *layer.shape[1:]),
                            skipped=int(store.skipped.sum()), dropped_skipped=drop_skipped)
