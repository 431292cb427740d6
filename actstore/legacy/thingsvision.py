"""The original THINGSvision functions, with their original signatures.

``tensor2slices``/``slices2tensor`` write and read the text slices of arrays
of 3 or more dimensions; ``split_activations``/``merge_activations`` split an
array by rows into numbered files and stack them back. The file layout itself
lives in :mod:`actstore.legacy.files`.

Example:
    >>> from actstore.legacy.thingsvision import slices2tensor
    >>> slices2tensor("out/alexnet/features.11", "activations.txt").shape    # doctest: +SKIP
    (12, 256, 6, 6)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadOptionError, LegacyFilesError
from .files import (
    SHAPE_HEADER,
    SLICE_FMT,
    ActivationFile,
    file_kind,
    file_name,
    legacy_format,
    split_bounds,
    split_files,
    text_shape,
)


def tensor2slices(PATH: str | Path, file_name: str, features: np.ndarray, fmt: str = SLICE_FMT) -> None:
    """Write an array of 3 or more dimensions as the original's text slices.

    Args:
        PATH: the folder.
        file_name: usually ``activations.txt``.
        features: (N, C, H, W) or any rank >= 3; every trailing 2-D slice is
            written with ``np.savetxt(fmt=fmt)`` and followed by ``# New slice``.
        fmt: value format; the original's ``%-7.5f`` keeps 5 decimals (lossy).

    Raises:
        UserError: ``features`` has fewer than 3 dimensions.

    Example:
        >>> tensor2slices("out", "activations.txt", np.zeros((2, 3, 4, 4)))   # doctest: +SKIP
    """
    features = np.asarray(features)
    if features.ndim < 3:
        raise BadOptionError(f"tensor2slices needs 3 or more dimensions, got shape {features.shape}; "
                        "use np.savetxt for a 2-D array")
    out = ActivationFile(Path(PATH) / file_name, features.shape, features.dtype, "slices", fmt)
    try:
        out.write(features)
    finally:
        out.close()


def split_activations(PATH: str | Path, features: np.ndarray, file_format: str | int = "txt",
                      n_splits: int | str | None = None) -> list[Path]:
    """Write ``features`` by rows into ``n_splits`` files ``activations_01.txt`` ... .

    Takes the original's order ``(PATH, features, file_format, n_splits)``;
    the older original's ``(PATH, features, n_splits)`` (text files) works too,
    recognised by a number in third place. Boundaries are
    ``np.linspace(0, N, n_splits + 1, dtype=int)``: exactly ``n_splits`` files
    (the original wrote ``n_splits - 1``).

    Args:
        PATH: the folder.
        features: (N, units) array (or N-D: text then uses slices).
        file_format: ``txt`` or ``npy`` (also ``.txt``, ``.npy``).
        n_splits: number of files, 1 to N.

    Returns:
        The files written, in order.

    Raises:
        UserError: ``n_splits`` missing or out of range, or an unknown ``file_format``.

    Example:
        >>> split_activations("out", np.ones((100, 8)), ".txt", 10)       # doctest: +SKIP
    """
    if isinstance(file_format, (int, np.integer)):   # the older (PATH, features, n_splits[, file_format])
        file_format, n_splits = (n_splits if isinstance(n_splits, str) else "txt"), int(file_format)
    if n_splits is None:
        raise BadOptionError("split_activations needs n_splits: split_activations(PATH, features, "
                             "file_format, n_splits)")
    n_splits = int(n_splits)
    features = np.asarray(features)
    kind = file_kind(legacy_format(file_format), features.ndim, nd_npy_as_text=False)
    bounds = split_bounds(len(features), n_splits)
    paths = []
    for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
        part = features[lo:hi]
        out = ActivationFile(Path(PATH) / file_name(index, kind), part.shape, part.dtype, kind)
        try:
            out.write(part)
        finally:
            out.close()
        paths.append(out.path)
    return paths


def slices2tensor(PATH: str | Path, file: str) -> np.ndarray:
    """Read a slices file back: ``np.loadtxt`` reshaped to the shape on its first line.

    Args:
        PATH: the folder.
        file: e.g. ``activations.txt``.

    Returns:
        The float64 array of the shape in the ``# Array shape:`` header.

    Raises:
        UserError: the file has no shape header.

    Example:
        >>> slices2tensor("out/alexnet/features.11", "activations.txt").shape    # doctest: +SKIP
        (12, 256, 6, 6)
    """
    path = Path(PATH) / file
    shape = text_shape(path)
    if shape is None:
        raise LegacyFilesError(f"{path} has no '{SHAPE_HEADER.strip()}' first line: read it with np.loadtxt")
    return np.loadtxt(path).reshape(shape)


def merge_activations(PATH: str | Path) -> np.ndarray:
    """Stack every ``activations_NN.txt`` (or ``.npy``) of a folder in numeric order.

    Args:
        PATH: the folder holding the split files.

    Returns:
        The stacked array (float64 from text, the stored dtype from npy).

    Raises:
        UserError: no split files, or both .txt and .npy splits.

    Example:
        >>> merge_activations("out/alexnet/classifier.4").shape      # doctest: +SKIP
        (1854, 4096)
    """
    paths, suffix = split_files(Path(PATH))
    if not paths:
        raise LegacyFilesError(f"no activations_NN.txt or activations_NN.npy in {PATH}")
    if suffix == "npy":
        return np.concatenate([np.load(p) for p in paths])
    return np.concatenate([slices2tensor(p.parent, p.name) if text_shape(p) else np.loadtxt(p, ndmin=2)
                           for p in paths])
