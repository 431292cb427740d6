"""The original THINGSvision text/npy layout as a row sink, and its file primitives.

The original ``extract.py`` wrote, for one module, the folder
``<out_path>/<model_name>/<module_name>/`` holding

- ``activations.txt`` (``np.savetxt``, default format) or ``activations.npy``
  (``np.save``) for a 2-D result (N, units);
- for a result of 3 or more dimensions, ``activations.txt`` in "slices": a line
  ``# Array shape: (N, C, H, W)``, then every 2-D slice ``features[i, j]``
  written with ``np.savetxt(fmt='%-7.5f')`` and followed by ``# New slice``;
- ``activations_01.txt``, ``activations_02.txt``, ... when split by rows;
- ``targets.txt`` (or ``targets.npy``) beside it.

Files are written and read a few chunks of rows at a time, so memory does not
grow with the number of images. This module never imports torch.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from numpy.lib import format as npy_format

from ..errors import BadImagesError, BadOptionError, LegacyFilesError, StoreConflictError
from ..store import STORE_SUFFIXES, LayerSpec, Layout, Location, is_store, suffix

# The original tensor2slices wrote each value "left-justified, 7 characters wide,
# with 5 decimal places": lossy, kept as the default so old readers see the same text.
SLICE_FMT = "%-7.5f"
SLICE_DECIMALS = 5
SHAPE_HEADER = "# Array shape: "
SLICE_END = "# New slice"
# The formats of this layout (--file-format).
LEGACY_FORMATS = ("txt", "npy")
SPLIT_NAME = re.compile(r"^activations_(\d+)\.(txt|npy)$")


def slice_format(decimals: int = SLICE_DECIMALS) -> str:
    """The printf format of one value in a slices file: ``%-7.5f`` for 5 decimals."""
    if decimals < 1:
        raise BadOptionError(f"--decimals must be at least 1, got {decimals}")
    return f"%-{decimals + 2}.{decimals}f"


def split_bounds(n_rows: int, n_splits: int) -> np.ndarray:
    """Row boundaries of ``n_splits`` files: ``np.linspace(0, N, n_splits + 1, dtype=int)``.

    The original passed ``n_splits`` itself to ``linspace`` and so wrote one
    file fewer than asked; this writes as many as asked, with the same
    boundaries as the original asked for ``n_splits + 1``.
    """
    if not 1 <= n_splits <= max(n_rows, 1):
        raise BadOptionError(f"--split must be between 1 and the number of rows ({n_rows}), got {n_splits}")
    return np.linspace(0, n_rows, n_splits + 1, dtype=int)


class ActivationFile:
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


def legacy_format(file_format: str) -> str:
    name = file_format.lower().lstrip(".")
    if name not in LEGACY_FORMATS:
        raise BadOptionError(f"unknown legacy --file-format {file_format!r}: use txt or npy")
    return name


def file_kind(file_format: str, ndim: int, nd_npy_as_text: bool) -> str:
    if ndim >= 3 and (file_format == "txt" or nd_npy_as_text):
        return "slices"
    return file_format


def file_name(index: int | None, kind: str) -> str:
    suffix = "npy" if kind == "npy" else "txt"
    return f"activations.{suffix}" if index is None else f"activations_{index:02d}.{suffix}"


class _LayerFiles:
    """The activations file(s) of one layer, opened one at a time as rows arrive."""

    def __init__(self, folder: Path, spec: LayerSpec, n_rows: int, kind: str, n_splits: int, fmt: str) -> None:
        self.folder, self.kind, self.fmt = folder, kind, fmt
        self.row_shape, self.dtype = spec.shape, np.dtype(spec.dtype)
        self.bounds = split_bounds(n_rows, n_splits) if n_splits > 1 else np.array([0, n_rows])
        self.names = [file_name(i if n_splits > 1 else None, kind) for i in range(1, len(self.bounds))]
        self.index = 0
        self.open: ActivationFile | None = None

    def partial(self, name: str) -> Path:
        return self.folder / f"{name}.partial"

    def write(self, start: int, block: np.ndarray) -> None:
        while len(block):
            lo, hi = self.bounds[self.index], self.bounds[self.index + 1]
            if self.open is None:
                self.open = ActivationFile(self.partial(self.names[self.index]),
                                            (int(hi - lo), *self.row_shape), self.dtype, self.kind, self.fmt)
            take = min(len(block), int(hi) - start)
            self.open.write(block[:take])
            block, start = block[take:], start + take
            if start == hi:
                self.open.close()
                self.open, self.index = None, self.index + 1

    def finish(self, complete: bool) -> list[Path]:
        if self.open is not None:
            handle, self.open = self.open, None
            try:
                handle.close()
            except OSError:   # a full disk fails the last flush too: the file goes anyway
                if complete:
                    raise
        if not complete:
            for name in self.names:
                self.partial(name).unlink(missing_ok=True)  # our own unfinished file, useless to any reader
            return []
        return [self.partial(name).replace(self.folder / name) for name in self.names]


class LegacyFiles:
    """Writes the original tool's folder of txt/npy files: the row sink that
    ``extract`` and ``export`` write this layout to (it is not a store: no
    reader, never resumed, rechunked or imported into).

    One folder ``<out_path>/<model_name>/<module_name>/`` per layer; rows must
    arrive in order. Files are written as ``*.partial`` and renamed when every
    row is in, with ``targets`` and ``file_names.txt``, so an interrupted run
    never leaves a truncated ``activations.txt`` that an old reader would take
    for a whole one, and never touches what was there. With ``overwrite``,
    the files of an earlier run that the new one does not replace are deleted
    after it has finished: only this layout's exact names (``activations.txt``,
    ``activations_NN.npy``, ``targets.txt``, ``file_names.txt``, ...), never
    another file (a user's ``activations_notes.txt`` stays).

    Example:
        >>> files = LegacyFiles(Path("out"), layout, names, targets, file_format="txt",
        ...                     model_name="alexnet")                    # doctest: +SKIP
    """

    # A stopped run keeps nothing: files are written in row order and replaced whole.
    resumable = False
    noun = "files"
    stream_rows = None   # rows arrive in blocks of whole chunks (StoreWriter.stream_rows)
    # np.savetxt's default "%.18e" and a separator: 25 bytes (slices' "%-7.5f" are narrower
    # unless values reach 1e6): the most one value can take, for the free-space check.
    max_bytes_per_value = 26

    def __init__(self, path: Path, layout: Layout, file_names: Sequence[str], targets: Sequence[int], *,
                 file_format: str, model_name: str, n_splits: int = 1, decimals: int = SLICE_DECIMALS,
                 nd_npy_as_text: bool = True, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.file_format = self.format_name = legacy_format(file_format)
        self.n_rows = layout.n_rows
        self._file_names = [str(name) for name in file_names]
        self._targets = np.asarray(targets, dtype=np.int64)
        self._rows = 0
        self._closed = False
        fmt = slice_format(decimals)
        split_bounds(self.n_rows, n_splits)   # refuse a bad --split before any folder is made
        broken = next((name for name in self._file_names if "\n" in name or "\r" in name), None)
        if broken is not None:   # file_names.txt holds one name a line
            raise BadImagesError(f"{broken!r} has a line break in its name, which file_names.txt of the "
                                 f"{self.file_format} layout cannot hold: rename it, or write a .zarr or .h5 "
                                 "store (they keep any name)")
        folders = _folders(self.path, model_name, layout)
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
            kind = file_kind(self.file_format, 1 + len(spec.shape), nd_npy_as_text)
            self._layers[spec.module_name] = _LayerFiles(folders[spec.module_name], spec, self.n_rows,
                                                         kind, n_splits, fmt)

    @classmethod
    def refuse_existing(cls, path: Path, model_name: str, layout: Layout, overwrite: bool) -> None:
        """Refuse what a new output would replace at ``path`` unless ``overwrite``
        (which replaces it only once the new output has finished)."""
        _refuse_existing(_folders(Path(path), model_name, layout).values(), overwrite)

    def write_rows(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        if start != self._rows:
            raise ValueError(f"legacy files are written in row order: expected row {self._rows}, got {start}")
        count = len(next(iter(arrays.values())))
        for name, block in arrays.items():
            self._layers[name].write(start, block)
        self._rows += count

    def written(self) -> np.ndarray:
        return np.arange(self.n_rows) < self._rows

    def limit_codec_threads(self, threads: int) -> None:
        """Text and npy files are written by this thread: nothing to limit."""

    def stored_bytes(self) -> dict[str, int]:
        return {name: sum((files.folder / n).stat().st_size for n in files.names)
                for name, files in self._layers.items()}

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
            earlier = set(_our_files(files.folder))
            if complete:   # side files first: activations.* appear last, with everything beside them
                _write_side_files(files.folder, self.file_format, self._targets, self._file_names)
            final = files.finish(complete)
            if complete:   # the earlier run's files that this one did not replace (--overwrite)
                for stale in earlier - set(final) - set(_side_files(files.folder, self.file_format)):
                    stale.unlink(missing_ok=True)


def legacy_format_of(path: Location, file_format: str | None) -> str | None:
    """The original layout's format when an extraction's out path asks for it:
    ``--file-format txt|npy``, or (as the original extract.py's default) a
    path without a store suffix that holds no store; None for a store.

    Example:
        >>> legacy_format_of("runs/alexnet.zarr", None), legacy_format_of("runs/", "npy")
        (None, 'npy')
    """
    if file_format is not None:
        name = file_format.lower().lstrip(".")
        return name if name in LEGACY_FORMATS else None
    if is_store(path) or suffix(path) in STORE_SUFFIXES:
        return None
    warnings.warn(f"out path {path} has no store suffix ({', '.join(STORE_SUFFIXES)}): writing "
                  "the original THINGSvision text layout <out>/<model>/<module>/activations.txt; "
                  "use a path ending in .zarr or .h5 (or --file-format zarr) for a store", stacklevel=3)
    return "txt"


def model_folder(model_name: str) -> str:
    """The folder name of a model: a hub id's ``/`` becomes ``--``, so
    ``facebook/dinov2-small`` is one folder, as every other model's.

    Example:
        >>> model_folder("facebook/dinov2-small"), model_folder("alexnet")
        ('facebook--dinov2-small', 'alexnet')
    """
    return model_name.replace("/", "--")


def _folders(path: Path, model_name: str, layout: Layout) -> dict[str, Path]:
    return {spec.module_name: path / model_folder(model_name) / spec.module_name for spec in layout.layers}


def _our_files(folder: Path) -> list[Path]:
    """The files in ``folder`` that carry this layout's exact names (what an
    earlier run of it wrote); nothing else there is ever deleted."""
    if not folder.is_dir():
        return []
    names = {"activations.txt", "activations.npy", "targets.txt", "targets.npy", "file_names.txt"}
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and (p.name in names or SPLIT_NAME.match(p.name)))


def _refuse_existing(folders: Iterable[Path], overwrite: bool) -> None:
    """Refuse a folder holding an earlier run's activations unless ``overwrite``;
    nothing is deleted here (the new run replaces them once it has finished)."""
    existing = [p for folder in folders for p in _our_files(folder) if p.name.startswith("activations")]
    if existing and not overwrite:
        raise StoreConflictError(f"{existing[0]} already exists ({len(existing)} activations file(s)); nothing was "
                        "changed: pass --overwrite to replace them (once the new run has finished) or choose "
                        "another --out-path")


def _side_files(folder: Path, file_format: str) -> list[Path]:
    return [folder / f"targets.{file_format}", folder / "file_names.txt"]


def _write_side_files(folder: Path, file_format: str, targets: np.ndarray, file_names: Sequence[str]) -> None:
    """``targets`` and ``file_names.txt``, each written under a temporary name and renamed."""
    targets_path, names_path = _side_files(folder, file_format)
    partial = targets_path.with_name(f"{targets_path.name}.partial")
    with partial.open("wb") as handle:
        if file_format == "npy":
            np.save(handle, targets)
        else:
            np.savetxt(handle, targets)
    partial.replace(targets_path)
    partial = names_path.with_name(f"{names_path.name}.partial")
    partial.write_text("".join(f"{name}\n" for name in file_names), encoding="utf-8")
    partial.replace(names_path)


def split_files(folder: Path) -> tuple[list[Path], str | None]:
    found = {}
    for path in folder.iterdir():
        match = SPLIT_NAME.match(path.name)
        if match and path.is_file():
            found.setdefault(match.group(2), []).append((int(match.group(1)), path))
    if len(found) > 1:
        raise LegacyFilesError(f"{folder} holds both activations_NN.txt and activations_NN.npy: "
                        "move one set elsewhere")
    if not found:
        return [], None
    suffix, numbered = next(iter(found.items()))
    return [path for _, path in sorted(numbered)], suffix


def text_shape(path: Path) -> tuple[int, ...] | None:
    """The shape in a slices file's first line, None for a plain 2-D text file."""
    with path.open() as handle:
        first = handle.readline()
    if not first.startswith(SHAPE_HEADER.rstrip()):
        return None
    return tuple(int(n) for n in re.findall(r"\d+", first))


def npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    version = npy_format.read_magic(handle)
    read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
    if read is None:
        raise LegacyFilesError(f"{handle.name}: .npy version {version} is not supported; re-save it with np.save")
    shape, fortran_order, dtype = read(handle)
    if fortran_order:
        raise LegacyFilesError(f"{handle.name} is in Fortran order: re-save it with "
                        "np.save(path, np.ascontiguousarray(array))")
    return tuple(shape), dtype

