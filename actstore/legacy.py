"""The original THINGSvision text/npy layout: write it, read it, and bring it into stores.

The original ``extract.py`` wrote, for one module, the folder
``<out_path>/<model_name>/<module_name>/`` holding

- ``activations.txt`` (``np.savetxt``, default format) or ``activations.npy``
  (``np.save``) for a 2-D result (N, units);
- for a result of 3 or more dimensions, ``activations.txt`` in "slices": a line
  ``# Array shape: (N, C, H, W)``, then every 2-D slice ``features[i, j]``
  written with ``np.savetxt(fmt='%-7.5f')`` and followed by ``# New slice``;
- ``activations_01.txt``, ``activations_02.txt``, ... when split by rows;
- ``targets.txt`` (or ``targets.npy``) beside it.

Everything here streams: files are written and read a few chunks of rows at a
time, so memory does not grow with the number of images. This module never
imports torch.

Example:
    >>> from actstore.legacy import export_layer, import_legacy
    >>> export_layer("alexnet.zarr", "features.11", "legacy_out", "txt")    # doctest: +SKIP
    >>> import_legacy("legacy_out/alexnet/features.11", "back.zarr")        # doctest: +SKIP
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import math
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, TextIO

import numpy as np
from numpy.lib import format as npy_format

from . import __version__, defaults
from .errors import UserError
from .store import (FORMAT_NAME, FORMAT_VERSION, LEGACY_FORMATS, LayerSpec, Layout, Location, StoreWriter,
                    choose_chunks, create_writer, detect_format, exists, is_store, location, open_store,
                    remove_store)
from .store.location import is_url

# The original tensor2slices wrote each value "left-justified, 7 characters wide,
# with 5 decimal places": lossy, kept as the default so old readers see the same text.
SLICE_FMT = "%-7.5f"
SLICE_DECIMALS = 5
SHAPE_HEADER = "# Array shape: "
SLICE_END = "# New slice"
# Rows written or read per step when a caller does not give a chunk size.
STREAM_ROWS = defaults.CHUNK_IMAGES
IMPORTED = "unknown (imported)"
SPLIT_NAME = re.compile(r"^activations_(\d+)\.(txt|npy)$")


# --------------------------------------------------------------------------- writing


def slice_format(decimals: int = SLICE_DECIMALS) -> str:
    """The printf format of one value in a slices file: ``%-7.5f`` for 5 decimals."""
    if decimals < 1:
        raise UserError(f"--decimals must be at least 1, got {decimals}")
    return f"%-{decimals + 2}.{decimals}f"


def split_bounds(n_rows: int, n_splits: int) -> np.ndarray:
    """Row boundaries of ``n_splits`` files: ``np.linspace(0, N, n_splits + 1, dtype=int)``.

    The original passed ``n_splits`` itself to ``linspace`` and so wrote one
    file fewer than asked; this writes as many as asked, with the same
    boundaries as the original asked for ``n_splits + 1``.
    """
    if not 1 <= n_splits <= max(n_rows, 1):
        raise UserError(f"--split must be between 1 and the number of rows ({n_rows}), got {n_splits}")
    return np.linspace(0, n_rows, n_splits + 1, dtype=int)


class _ActivationFile:
    """One activations file written a block of rows at a time.

    ``kind`` is ``npy`` (header first, then raw rows: the bytes ``np.save``
    writes), ``txt`` (``np.savetxt``'s default format, one row a line) or
    ``slices`` (the original tensor2slices text).
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, kind: str,
                 fmt: str = SLICE_FMT) -> None:
        self.path, self.shape, self.dtype, self.kind = path, shape, np.dtype(dtype), kind
        self.rows = 0
        self._handle = path.open("wb" if kind == "npy" else "w", buffering=2**20)
        if kind == "npy":
            npy_format.write_array_header_1_0(self._handle, {
                "descr": npy_format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape})
        elif kind == "slices":
            self._handle.write(f"{SHAPE_HEADER}{shape}\n")
            height, width = shape[-2:]
            # One savetxt "row" is one whole slice: its lines, then the slice marker.
            # Same bytes as the original's savetxt per slice, far fewer Python calls.
            line = " ".join([fmt] * width)
            self._slice_fmt = f"{line}\n" * height + SLICE_END

    def write(self, block: np.ndarray) -> None:
        if self.kind == "npy":
            self._handle.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        elif self.kind == "txt":
            np.savetxt(self._handle, block)
        elif block.size:
            np.savetxt(self._handle, block.reshape(-1, self.shape[-2] * self.shape[-1]),
                       fmt=self._slice_fmt)
        self.rows += len(block)

    def close(self) -> None:
        self._handle.close()


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
        raise UserError(f"tensor2slices needs 3 or more dimensions, got shape {features.shape}; "
                        "use np.savetxt for a 2-D array")
    out = _ActivationFile(Path(PATH) / file_name, features.shape, features.dtype, "slices", fmt)
    try:
        out.write(features)
    finally:
        out.close()


def split_activations(PATH: str | Path, features: np.ndarray, n_splits: int,
                      file_format: str = "txt") -> list[Path]:
    """Write ``features`` by rows into ``n_splits`` files ``activations_01.txt`` ... .

    Boundaries are ``np.linspace(0, N, n_splits + 1, dtype=int)``: exactly
    ``n_splits`` files (the original wrote ``n_splits - 1``).

    Args:
        PATH: the folder.
        features: (N, units) array (or N-D: text then uses slices).
        n_splits: number of files, 1 to N.
        file_format: ``txt`` or ``npy``.

    Returns:
        The files written, in order.

    Raises:
        UserError: ``n_splits`` out of range or an unknown ``file_format``.

    Example:
        >>> split_activations("out", np.ones((100, 8)), 9)       # doctest: +SKIP
    """
    features = np.asarray(features)
    kind = _file_kind(_legacy_format(file_format), features.ndim, nd_npy_as_text=False)
    bounds = split_bounds(len(features), n_splits)
    paths = []
    for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
        part = features[lo:hi]
        out = _ActivationFile(Path(PATH) / _file_name(index, kind), part.shape, part.dtype, kind)
        try:
            out.write(part)
        finally:
            out.close()
        paths.append(out.path)
    return paths


def _legacy_format(file_format: str) -> str:
    name = file_format.lower().lstrip(".")
    if name not in LEGACY_FORMATS:
        raise UserError(f"unknown legacy --file-format {file_format!r}: use txt or npy")
    return name


def _file_kind(file_format: str, ndim: int, nd_npy_as_text: bool) -> str:
    if ndim >= 3 and (file_format == "txt" or nd_npy_as_text):
        return "slices"
    return file_format


def _file_name(index: int | None, kind: str) -> str:
    suffix = "npy" if kind == "npy" else "txt"
    return f"activations.{suffix}" if index is None else f"activations_{index:02d}.{suffix}"


class _LayerFiles:
    """The activations file(s) of one layer, opened one at a time as rows arrive."""

    def __init__(self, folder: Path, spec: LayerSpec, n_rows: int, kind: str, n_splits: int, fmt: str) -> None:
        self.folder, self.kind, self.fmt = folder, kind, fmt
        self.row_shape, self.dtype = spec.shape, np.dtype(spec.dtype)
        self.bounds = split_bounds(n_rows, n_splits) if n_splits > 1 else np.array([0, n_rows])
        self.names = [_file_name(i if n_splits > 1 else None, kind) for i in range(1, len(self.bounds))]
        self.index = 0
        self.open: _ActivationFile | None = None

    def partial(self, name: str) -> Path:
        return self.folder / f"{name}.partial"

    def write(self, start: int, block: np.ndarray) -> None:
        while len(block):
            lo, hi = self.bounds[self.index], self.bounds[self.index + 1]
            if self.open is None:
                self.open = _ActivationFile(self.partial(self.names[self.index]),
                                            (int(hi - lo), *self.row_shape), self.dtype, self.kind, self.fmt)
            take = min(len(block), int(hi) - start)
            self.open.write(block[:take])
            block, start = block[take:], start + take
            if start == hi:
                self.open.close()
                self.open, self.index = None, self.index + 1

    def finish(self, complete: bool) -> list[Path]:
        if self.open is not None:
            self.open.close()
            self.open = None
        final = []
        for name in self.names:
            partial = self.partial(name)
            if complete:
                final.append(partial.replace(self.folder / name))
            else:
                partial.unlink(missing_ok=True)  # our own unfinished file, useless to any reader
        return final


class LegacyWriter(StoreWriter):
    """Writes the original tool's folder of txt/npy files instead of a store.

    One folder ``<out_path>/<model_name>/<module_name>/`` per layer; rows must
    arrive in order. Files are written as ``*.partial`` and renamed when every
    row is in, then ``targets`` and ``file_names.txt`` are written, so an
    interrupted run never leaves a truncated ``activations.txt`` that an old
    reader would take for a whole one. Never resumed.

    Example:
        >>> writer = LegacyWriter(Path("out"), layout, names, targets, file_format="txt",
        ...                       model_name="alexnet")                         # doctest: +SKIP
    """

    format_name = "legacy"
    suffixes = ()
    supports_resume = False

    def __init__(self, path: Path, layout: Layout, file_names: Sequence[str], targets: Sequence[int], *,
                 file_format: str, model_name: str, n_splits: int = 1, decimals: int = SLICE_DECIMALS,
                 nd_npy_as_text: bool = True, overwrite: bool = False,
                 attrs: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.file_format = _legacy_format(file_format)
        self.n_rows = layout.n_rows
        self._file_names = [str(name) for name in file_names]
        self._targets = np.asarray(targets, dtype=np.int64)
        self._attrs = dict(attrs or {})
        self._rows = 0
        self._closed = False
        fmt = slice_format(decimals)
        folders = {spec.module_name: self.path / model_name / spec.module_name for spec in layout.layers}
        _refuse_existing(folders.values(), overwrite)
        as_text = [s.module_name for s in layout.layers
                   if self.file_format == "npy" and nd_npy_as_text and len(s.shape) >= 2]
        if as_text:
            warnings.warn(f"{', '.join(as_text)}: activations of 3 or more dimensions are written as text "
                          "slices to activations.txt, as the original extract.py did; pass --flatten-acts "
                          "for activations.npy, or extract to a store and `actstore export --file-format npy` "
                          "to keep the shape in one .npy", stacklevel=2)
        self._layers = {}
        for spec in layout.layers:
            folders[spec.module_name].mkdir(parents=True, exist_ok=True)
            kind = _file_kind(self.file_format, 1 + len(spec.shape), nd_npy_as_text)
            self._layers[spec.module_name] = _LayerFiles(folders[spec.module_name], spec, self.n_rows,
                                                         kind, n_splits, fmt)

    @classmethod
    def create(cls, path: Path, layout: Layout, file_names: Sequence[str], targets: Sequence[int],
               classes: Sequence[str], attrs: Mapping[str, Any]) -> "LegacyWriter":
        return cls(path, layout, file_names, targets, file_format=attrs["file_format"],
                   model_name=attrs["model_name"], overwrite=bool(attrs.get("overwrite", False)),
                   attrs=attrs)

    @classmethod
    def reopen(cls, path: Path) -> "LegacyWriter":
        raise UserError(f"{path} holds txt/npy files, which are never resumed: "
                        "run again with --overwrite, or extract to a .zarr store")

    def write_rows(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        if start != self._rows:
            raise ValueError(f"legacy files are written in row order: expected row {self._rows}, got {start}")
        count = len(next(iter(arrays.values())))
        for name, block in arrays.items():
            self._layers[name].write(start, block)
        self._rows += count

    def written(self) -> np.ndarray:
        return np.arange(self.n_rows) < self._rows

    def claims(self) -> dict[str, dict[str, Any]]:
        return {}   # never shared between processes (no --shard for txt/npy)

    def add_claim(self, name: str, attrs: Mapping[str, Any]) -> None:
        pass

    def remove_claim(self, name: str) -> None:
        pass

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        self._attrs.update(attrs)

    def root_attrs(self) -> dict[str, Any]:
        return dict(self._attrs)

    def files(self) -> dict[str, list[Path]]:
        """Per layer, the files a completed writer has written."""
        return {name: [files.folder / n for n in files.names] + _side_files(files.folder, self.file_format)
                for name, files in self._layers.items()}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        complete = self._rows == self.n_rows
        for files in self._layers.values():
            files.finish(complete)
            if complete:
                _write_side_files(files.folder, self.file_format, self._targets, self._file_names)


def _refuse_existing(folders: Iterable[Path], overwrite: bool) -> None:
    existing = [p for folder in folders if folder.is_dir() for p in sorted(folder.glob("activations*"))]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists ({len(existing)} activations file(s)); nothing was "
                        "changed: pass --overwrite to replace them or choose another --out-path")
    for path in existing:
        if path.is_file():
            path.unlink()


def _side_files(folder: Path, file_format: str) -> list[Path]:
    return [folder / f"targets.{file_format}", folder / "file_names.txt"]


def _write_side_files(folder: Path, file_format: str, targets: np.ndarray, file_names: Sequence[str]) -> None:
    targets_path, names_path = _side_files(folder, file_format)
    if file_format == "npy":
        np.save(targets_path, targets)
    else:
        np.savetxt(targets_path, targets)
    names_path.write_text("".join(f"{name}\n" for name in file_names), encoding="utf-8")


@dataclass
class ExportResult:
    """What :func:`export_layer` wrote."""

    folder: Path
    files: list[Path]
    shape: tuple[int, ...]


def export_layer(store_path: str | Path, module_name: str, out_path: str | Path, file_format: str = "txt", *,
                 n_splits: int = 1, decimals: int = SLICE_DECIMALS, overwrite: bool = False) -> ExportResult:
    """Write one layer of a store in the original layout, streaming chunk by chunk.

    Files go to ``<out_path>/<model_name>/<module_name>/``: the activations
    (``.npy`` keeps the stored shape in one array; text uses the original
    slices for 3+-D layers, ``%-7.5f`` by default, lossy), ``targets`` and
    ``file_names.txt``. Memory stays at a few chunks whatever the layer's size.

    Args:
        store_path: a complete store.
        module_name: the layer to export.
        out_path: the root folder of the original layout.
        file_format: ``txt`` or ``npy`` (``.txt``/``.npy`` accepted).
        n_splits: write ``activations_01`` ... ``activations_NN`` instead of one file.
        decimals: decimals of text slices (the original: 5).
        overwrite: replace existing ``activations*`` files in the target folder.

    Returns:
        An :class:`ExportResult` with the folder, the files and the layer's shape.

    Raises:
        UserError: missing store or layer, incomplete store, existing files, bad options.

    Example:
        >>> export_layer("alexnet.zarr", "features.11", "out", "txt", n_splits=4)   # doctest: +SKIP
    """
    with open_store(store_path) as store:
        if module_name not in store:
            raise UserError(f"no layer {module_name!r} in {store_path}; layers: {', '.join(store.layers)}")
        if not store.written.all():
            raise UserError(f"{store_path} is incomplete ({int(store.written.sum())}/{len(store)} rows): "
                            "finish it by rerunning the extraction before exporting")
        layer, spec = store[module_name], store.spec(module_name)
        layout = Layout(n_rows=len(store), layers=(spec,))
        writer = LegacyWriter(Path(out_path), layout, store.file_names, store.targets, file_format=file_format,
                              model_name=str(store.attrs.get("model_name", "model")), n_splits=n_splits,
                              decimals=decimals, nd_npy_as_text=False, overwrite=overwrite)
        try:
            step = layer.chunks[0]
            for start in range(0, len(store), step):
                writer.write_rows(start, {module_name: layer[start:start + step]})
        finally:
            writer.close()
        files = writer.files()[module_name]
        return ExportResult(folder=files[0].parent, files=files, shape=layer.shape)


# --------------------------------------------------------------------------- reading


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
    shape = _text_shape(path)
    if shape is None:
        raise UserError(f"{path} has no '{SHAPE_HEADER.strip()}' first line: read it with np.loadtxt")
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
    paths, suffix = _split_files(Path(PATH))
    if not paths:
        raise UserError(f"no activations_NN.txt or activations_NN.npy in {PATH}")
    if suffix == "npy":
        return np.concatenate([np.load(p) for p in paths])
    return np.concatenate([slices2tensor(p.parent, p.name) if _text_shape(p) else np.loadtxt(p, ndmin=2)
                           for p in paths])


def _split_files(folder: Path) -> tuple[list[Path], str | None]:
    found = {}
    for path in folder.iterdir():
        match = SPLIT_NAME.match(path.name)
        if match and path.is_file():
            found.setdefault(match.group(2), []).append((int(match.group(1)), path))
    if len(found) > 1:
        raise UserError(f"{folder} holds both activations_NN.txt and activations_NN.npy: "
                        "move one set elsewhere")
    if not found:
        return [], None
    suffix, numbered = next(iter(found.items()))
    return [path for _, path in sorted(numbered)], suffix


def _text_shape(path: Path) -> tuple[int, ...] | None:
    """The shape in a slices file's first line, None for a plain 2-D text file."""
    with path.open() as handle:
        first = handle.readline()
    if not first.startswith(SHAPE_HEADER.rstrip()):
        return None
    return tuple(int(n) for n in re.findall(r"\d+", first))


def _npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    version = npy_format.read_magic(handle)
    read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
    if read is None:
        raise UserError(f"{handle.name}: .npy version {version} is not supported; re-save it with np.save")
    shape, fortran_order, dtype = read(handle)
    if fortran_order:
        raise UserError(f"{handle.name} is in Fortran order: re-save it with "
                        "np.save(path, np.ascontiguousarray(array))")
    return tuple(shape), dtype


def _data_lines(handle: TextIO) -> Iterator[str]:
    return (line for line in handle if not line.lstrip().startswith("#") and line.strip())


@dataclass
class _SourceFile:
    """One activations file of an original output folder: its kind, shape and dtype."""

    path: Path
    kind: str                     # npy, txt or slices
    row_shape: tuple[int, ...]    # per image
    dtype: np.dtype
    rows: int | None              # None: a 2-D text file (rows known only by reading it)

    @classmethod
    def inspect(cls, path: Path) -> "_SourceFile":
        if path.suffix == ".npy":
            with path.open("rb") as handle:
                shape, dtype = _npy_header(handle)
            if len(shape) < 2:
                raise UserError(f"{path} holds a {len(shape)}-D array: expected (images, ...)")
            return cls(path, "npy", shape[1:], dtype, shape[0])
        shape = _text_shape(path)
        if shape is not None:
            return cls(path, "slices", shape[1:], np.dtype(np.float64), shape[0])
        with path.open() as handle:
            first = next(_data_lines(handle), None)
        if first is None:
            raise UserError(f"{path} holds no numbers")
        return cls(path, "txt", (len(first.split()),), np.dtype(np.float64), None)

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        """The file's rows, ``rows`` images at a time (text parsed as float64, like np.loadtxt)."""
        if self.kind == "npy":
            with self.path.open("rb") as handle:
                _npy_header(handle)
                per_image = math.prod(self.row_shape)
                for start in range(0, self.rows, rows):
                    count = min(rows, self.rows - start)
                    block = np.fromfile(handle, dtype=self.dtype, count=count * per_image)
                    if block.size != count * per_image:
                        raise UserError(f"{self.path} is truncated: it ends before row {start + count}")
                    yield block.reshape(count, *self.row_shape)
            return
        lines_per_image = math.prod(self.row_shape[:-1])
        with self.path.open() as handle:
            lines = _data_lines(handle)
            while True:
                chunk = list(itertools.islice(lines, rows * lines_per_image))
                if not chunk:
                    return
                try:
                    values = np.loadtxt(chunk, ndmin=2)
                except ValueError as error:
                    raise UserError(f"{self.path} is not a table of numbers ({error})") from error
                if values.shape[1] != self.row_shape[-1] or len(chunk) % lines_per_image:
                    raise UserError(f"{self.path} does not hold rows of shape {self.row_shape} "
                                    f"(found a block of {values.shape}); is the file complete?")
                yield values.reshape(-1, *self.row_shape)


@dataclass
class _SourceLayer:
    """The activations, targets and file names of one module folder of the original layout."""

    module_name: str
    folder: Path
    files: list[_SourceFile]
    targets: np.ndarray
    file_names: list[str] | None
    side_files: list[Path]

    @classmethod
    def inspect(cls, folder: Path) -> "_SourceLayer":
        paths, _ = _split_files(folder)
        singles = [folder / n for n in ("activations.txt", "activations.npy") if (folder / n).is_file()]
        if len(singles) + bool(paths) > 1:
            found = [p.name for p in singles] + ([f"{paths[0].name} ..."] if paths else [])
            raise UserError(f"{folder} holds several activations sets ({', '.join(found)}): "
                            "move all but one elsewhere")
        files = [_SourceFile.inspect(p) for p in singles or paths]
        if not files:
            raise UserError(f"no activations.txt/.npy or activations_NN files in {folder}")
        shapes = {f.row_shape for f in files}
        if len(shapes) > 1:
            raise UserError(f"the split files in {folder} hold rows of different shapes {sorted(shapes)}")
        targets_path = next((folder / n for n in ("targets.npy", "targets.txt") if (folder / n).is_file()), None)
        if targets_path is None:
            raise UserError(f"no targets.txt or targets.npy in {folder}: the original tool wrote one "
                            "beside the activations; put it back to import")
        raw = np.load(targets_path) if targets_path.suffix == ".npy" else np.loadtxt(targets_path, ndmin=1)
        targets = np.asarray(raw).reshape(-1)
        if not np.array_equal(targets, np.round(targets)):
            raise UserError(f"{targets_path} holds non-integer targets")
        names_path = folder / "file_names.txt"
        file_names = names_path.read_text(encoding="utf-8").splitlines() if names_path.is_file() else None
        if file_names is not None and len(file_names) != len(targets):
            raise UserError(f"{names_path} has {len(file_names)} lines but {targets_path.name} "
                            f"has {len(targets)} targets")
        side = [targets_path] + ([names_path] if file_names is not None else [])
        return cls(folder.name, folder, files, targets.astype(np.int64), file_names, side)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.files[0].row_shape

    @property
    def dtype(self) -> str:
        # Store dtypes are float32/float16: text and float64 npy become float32.
        return "float16" if self.files[0].dtype == np.float16 else "float32"

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        """All rows in order, in blocks of exactly ``rows`` (the last may be shorter)."""
        pending: list[np.ndarray] = []
        count = 0
        for source in self.files:
            for block in source.blocks(rows):
                pending.append(block.astype(self.dtype, copy=False))
                count += len(block)
                while count >= rows:
                    joined = np.concatenate(pending)
                    yield joined[:rows]
                    pending, count = [joined[rows:]], count - rows
        if count:
            yield np.concatenate(pending)


def _find_layers(source: Path) -> tuple[str, list[_SourceLayer]]:
    if not source.is_dir():
        raise UserError(f"{source} is not a folder: point import-legacy at <out_path>/<model>/<module>/")

    def has_activations(folder: Path) -> bool:
        return any(p.name.startswith("activations") for p in folder.iterdir())

    if has_activations(source):
        return source.resolve().parent.name, [_SourceLayer.inspect(source)]
    folders = sorted(p for p in source.iterdir() if p.is_dir() and has_activations(p))
    if not folders:
        raise UserError(f"no activations files in {source} or its subfolders: point import-legacy at "
                        "<out_path>/<model>/<module>/ (or <out_path>/<model>/)")
    return source.resolve().name, [_SourceLayer.inspect(folder) for folder in folders]


def _classes(file_names: list[str] | None, targets: np.ndarray) -> tuple[list[str], str]:
    """Class names from ``<class>/<file>`` names when each target has one folder; else none."""
    if not file_names or any("/" not in name for name in file_names):
        return [], "flat"
    folder_of: dict[int, set[str]] = {}
    for name, target in zip(file_names, targets.tolist()):
        folder_of.setdefault(target, set()).add(name.split("/", 1)[0])
    if sorted(folder_of) != list(range(len(folder_of))) or any(len(v) != 1 for v in folder_of.values()):
        return [], "flat"
    return [next(iter(folder_of[t])) for t in range(len(folder_of))], "classes"


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass
class ImportResult:
    """What :func:`import_legacy` wrote."""

    path: Location
    file_format: str
    n_images: int
    layers: dict[str, tuple[int, ...]]


def import_legacy(source: str | Path, out_path: str | Path, *, file_format: str | None = None,
                  overwrite: bool = False, chunk_images: int = defaults.CHUNK_IMAGES,
                  compression: str | None = None, command_line: str | None = None) -> ImportResult:
    """Read an original output folder into a store, streaming a few chunks at a time.

    ``source`` is ``<out>/<model>/<module>/`` (one layer) or ``<out>/<model>/``
    (every module folder under it, one layer each). Single or split files,
    ``.txt`` or ``.npy``, with or without ``file_names.txt``; ``targets`` is
    required. The model name is the folder's parent (or the folder itself);
    attribute ``imported_from`` records the folder and each file's SHA-256.

    Args:
        source: the original output folder.
        out_path: the new store (``.zarr`` directory or ``.h5`` file).
        file_format: ``zarr`` or ``hdf5`` [default: from ``out_path``].
        overwrite: replace an existing store at ``out_path``.
        chunk_images: rows per chunk.
        compression: the store's codec [default: the format's, ``defaults.compression``].
        command_line: recorded in the attributes [default: ``sys.argv``].

    Returns:
        An :class:`ImportResult`.

    Raises:
        UserError: nothing to import, inconsistent files, or ``out_path`` taken.

    Example:
        >>> import_legacy("activations/alexnet/features.11", "alexnet.zarr")    # doctest: +SKIP
    """
    source, out_path = Path(source), location(out_path)   # the store may be a URL (s3://...)
    store_format = detect_format(out_path, file_format)
    if store_format in LEGACY_FORMATS:
        raise UserError("import-legacy writes a store: use --file-format zarr or hdf5")
    compression = compression or defaults.compression(store_format)
    model_name, layers = _find_layers(source)
    first = layers[0]
    for layer in layers[1:]:
        if not np.array_equal(layer.targets, first.targets) or layer.file_names != first.file_names:
            raise UserError(f"{layer.folder} and {first.folder} hold different targets or file names: "
                            "import them one at a time")
    n_images = len(first.targets)
    if n_images == 0:
        raise UserError(f"{first.folder}: targets are empty, nothing to import")
    if exists(out_path):
        if not overwrite:
            raise UserError(f"out path {out_path} exists; nothing was changed: pass --overwrite "
                            "to replace it or choose another --out-path")
        remove_store(out_path)
    specs = tuple(LayerSpec(module_name=layer.module_name, shape=layer.row_shape, native_shape=layer.row_shape,
                            dtype=layer.dtype, chunks=choose_chunks(layer.row_shape, np.dtype(layer.dtype).itemsize,
                                                                    chunk_images))
                  for layer in layers)
    layout = Layout(n_rows=n_images, layers=specs, chunk_images=chunk_images, compression=compression)
    file_names = first.file_names or [""] * n_images
    classes, image_layout = _classes(first.file_names, first.targets)
    imported_from = {
        "path": str(source.resolve()), "original_format": "npy" if first.files[0].kind == "npy" else "txt",
        "files": [{"name": str(p.relative_to(source)), "sha256": _sha256(p), "bytes": p.stat().st_size}
                  for layer in layers for p in [f.path for f in layer.files] + layer.side_files],
        "file_names_known": first.file_names is not None,
        "source_dtypes": {layer.module_name: str(layer.files[0].dtype) for layer in layers},
    }
    fingerprint = {
        "format_version": FORMAT_VERSION, "imported_from": imported_from["path"],
        "files_sha256": {f["name"]: f["sha256"] for f in imported_from["files"]},
        "layers": [s.module_name for s in specs], "shapes": {s.module_name: list(s.shape) for s in specs},
        "chunks": {s.module_name: list(s.chunks) for s in specs}, "dtype": specs[0].dtype,
        "compression": compression, "n_images": n_images,
    }
    attrs = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "actstore_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "model_name": model_name, "weights": IMPORTED, "weights_sha256": None, "preprocessing": IMPORTED,
        "dtype": specs[0].dtype, "compression": compression, "compression_level": layout.level,
        "chunk_images": chunk_images, "flatten_acts": False,
        "torch_version": IMPORTED, "torchvision_version": IMPORTED, "device": IMPORTED,
        "rnd_seed": None, "fraction": 1.0, "in_path": str(source.resolve()), "image_layout": image_layout,
        "things": False, "n_images": n_images, "command_line": command_line or " ".join(sys.argv),
        "status": "incomplete", "fingerprint": fingerprint,
        "fingerprint_sha256": hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest(),
        "imported_from": imported_from,
    }
    if not is_url(out_path):
        out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = create_writer(out_path, store_format, layout, file_names, first.targets, classes, attrs)
    try:
        start = 0
        for blocks in itertools.zip_longest(*(layer.blocks(chunk_images) for layer in layers)):
            sizes = {len(b) if b is not None else 0 for b in blocks}
            if len(sizes) > 1 or start + max(sizes) > n_images:
                raise UserError(f"the activations in {source} do not hold {n_images} rows each, as the "
                                "targets say: is a split file missing or extra?")
            writer.write_rows(start, {layer.module_name: b for layer, b in zip(layers, blocks)})
            start += max(sizes)
        if start != n_images:
            raise UserError(f"the activations in {source} hold {start} rows but the targets {n_images}: "
                            "is a split file missing?")
        writer.update_attrs({"status": "complete",
                             "completed": _dt.datetime.now(_dt.timezone.utc).isoformat()})
    except BaseException:
        writer.close()
        if is_store(out_path):
            remove_store(out_path)  # ours, half-written: a rerun starts clean
        raise
    writer.close()
    return ImportResult(path=out_path, file_format=store_format, n_images=n_images,
                        layers={s.module_name: s.shape for s in specs})


__all__ = ["ExportResult", "ImportResult", "LegacyWriter", "SLICE_FMT", "export_layer", "import_legacy",
           "merge_activations", "slice_format", "slices2tensor", "split_activations", "split_bounds",
           "tensor2slices"]
