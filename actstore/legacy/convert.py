"""From the original layout into a store: import txt/npy files (:func:`import_legacy`).

Streams a few chunks of rows at a time, so memory does not grow with the
number of images. This module never imports torch. The other way, a store's
layer into the layout, is :mod:`.export`.

Example:
    >>> from actstore.legacy import import_legacy
    >>> import_legacy("legacy_out/alexnet/features.11", "back.zarr")        # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np

from .. import config
from ..errors import BadOptionError, LegacyFilesError
from ..store import (
    FORMAT_VERSION,
    LayerSpec,
    Layout,
    Location,
    choose_chunks,
    choose_shard_rows,
    default_compression,
    detect_format,
    location,
)
from ..store.metadata.provenance import root_attrs
from ..store.session import open_session
from .files import npy_header, split_files, text_shape

IMPORTED = "unknown (imported)"


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
                shape, dtype = npy_header(handle)
            if len(shape) < 2:
                raise LegacyFilesError(f"{path} holds a {len(shape)}-D array: expected (images, ...)")
            return cls(path, "npy", shape[1:], dtype, shape[0])
        shape = text_shape(path)
        if shape is not None:
            return cls(path, "slices", shape[1:], np.dtype(np.float64), shape[0])
        with path.open() as handle:
            first = next(_data_lines(handle), None)
        if first is None:
            raise LegacyFilesError(f"{path} holds no numbers")
        return cls(path, "txt", (len(first.split()),), np.dtype(np.float64), None)

    @property
    def original_format(self) -> str:
        return "npy" if self.kind == "npy" else "txt"

    def count_rows(self) -> int:
        """Rows (images) in the file: from its header, or by counting a text file's lines."""
        if self.rows is not None:
            return self.rows
        with self.path.open() as handle:
            return sum(1 for _ in _data_lines(handle))

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        """The file's rows, ``rows`` images at a time (text parsed as float64, like np.loadtxt)."""
        if self.kind == "npy":
            with self.path.open("rb") as handle:
                npy_header(handle)
                per_image = math.prod(self.row_shape)
                for start in range(0, self.rows, rows):
                    count = min(rows, self.rows - start)
                    block = np.fromfile(handle, dtype=self.dtype, count=count * per_image)
                    if block.size != count * per_image:
                        raise LegacyFilesError(f"{self.path} is truncated: it ends before row {start + count}")
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
                    raise LegacyFilesError(f"{self.path} is not a table of numbers ({error})") from error
                if values.shape[1] != self.row_shape[-1] or len(chunk) % lines_per_image:
                    raise LegacyFilesError(f"{self.path} does not hold rows of shape {self.row_shape} "
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
        paths, _ = split_files(folder)
        singles = [folder / n for n in ("activations.txt", "activations.npy") if (folder / n).is_file()]
        if len(singles) + bool(paths) > 1:
            found = [p.name for p in singles] + ([f"{paths[0].name} ..."] if paths else [])
            raise LegacyFilesError(f"{folder} holds several activations sets ({', '.join(found)}): "
                            "move all but one elsewhere")
        files = [_SourceFile.inspect(p) for p in singles or paths]
        if not files:
            raise LegacyFilesError(f"no activations.txt/.npy or activations_NN files in {folder}")
        shapes = {f.row_shape for f in files}
        if len(shapes) > 1:
            raise LegacyFilesError(f"the split files in {folder} hold rows of different shapes {sorted(shapes)}")
        targets_path = next((folder / n for n in ("targets.npy", "targets.txt") if (folder / n).is_file()), None)
        if targets_path is None:
            raise LegacyFilesError(f"no targets.txt or targets.npy in {folder}: the original tool wrote one "
                            "beside the activations; put it back to import")
        raw = np.load(targets_path) if targets_path.suffix == ".npy" else np.loadtxt(targets_path, ndmin=1)
        targets = np.asarray(raw).reshape(-1)
        if not np.array_equal(targets, np.round(targets)):
            raise LegacyFilesError(f"{targets_path} holds non-integer targets")
        names_path = folder / "file_names.txt"
        file_names = names_path.read_text(encoding="utf-8").splitlines() if names_path.is_file() else None
        if file_names is not None and len(file_names) != len(targets):
            raise LegacyFilesError(f"{names_path} has {len(file_names)} lines but {targets_path.name} "
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
        raise LegacyFilesError(f"{source} is not a folder: point import-legacy at <out_path>/<model>/<module>/")

    def has_activations(folder: Path) -> bool:
        return any(p.name.startswith("activations") for p in folder.iterdir())

    if has_activations(source):
        return source.resolve().parent.name, [_SourceLayer.inspect(source)]
    folders = sorted(p for p in source.iterdir() if p.is_dir() and has_activations(p))
    if not folders:
        raise LegacyFilesError(f"no activations files in {source} or its subfolders: point import-legacy at "
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
                  overwrite: bool = False, chunk_images: int = config.CHUNK_IMAGES,
                  compression: str | None = None, zarr_shard_rows: int | None = None,
                  command_line: str | None = None) -> ImportResult:
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
        compression: the store's codec [default: the format's].
        zarr_shard_rows: rows per Zarr shard, a multiple of ``chunk_images``;
            0: one file per chunk [default: as ``extract`` chooses].
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
    compression = compression or default_compression(out_path, store_format, resume=False)
    if chunk_images < 1:
        raise BadOptionError(f"--chunk-images must be at least 1, got {chunk_images}")
    model_name, layers = _find_layers(source)
    n_images = _check_rows(source, layers)
    specs = tuple(LayerSpec(module_name=layer.module_name, shape=layer.row_shape, native_shape=layer.row_shape,
                            dtype=layer.dtype, chunks=choose_chunks(layer.row_shape, np.dtype(layer.dtype).itemsize,
                                                                    chunk_images))
                  for layer in layers)
    layout = Layout(n_rows=n_images, layers=specs, chunk_images=chunk_images, compression=compression,
                    shard_rows=choose_shard_rows(store_format, specs, n_images, chunk_images, zarr_shard_rows))
    first = layers[0]
    classes, image_layout = _classes(first.file_names, first.targets)
    attrs = _import_attrs(source, layers, layout, model_name, image_layout, command_line)
    with open_session(out_path, store_format, layout, first.file_names or [""] * n_images, first.targets,
                      classes, attrs, overwrite=overwrite, rerun_complete=False) as session:
        _write_blocks(session, layers, layout, source)
        session.complete()
    return ImportResult(path=out_path, file_format=store_format, n_images=n_images,
                        layers={s.module_name: s.shape for s in specs})


def _write_blocks(session, layers: list[_SourceLayer], layout: Layout, source: Path) -> None:
    """Every layer's rows into the session's store, whole chunk rows at a time
    (shards are streamed; else whole chunks): little in memory, and no stored
    block is ever written twice. A resumed store keeps the unit it was made
    with, and the rows it holds are skipped."""
    written, start, n_images = session.written(), 0, layout.n_rows
    block_rows = session.writer.stream_rows or session.writer.block_rows or layout.block_rows
    for blocks in itertools.zip_longest(*(layer.blocks(block_rows) for layer in layers)):
        sizes = {len(b) if b is not None else 0 for b in blocks}
        if len(sizes) > 1 or start + max(sizes) > n_images:
            raise LegacyFilesError(f"the activations in {source} do not hold {n_images} rows each, as the "
                                   "targets say: is a split file missing or extra?")
        if not written[start:start + max(sizes)].all():
            session.writer.write_rows(start, {layer.module_name: b for layer, b in zip(layers, blocks)})
        start += max(sizes)
    if start != n_images:
        raise LegacyFilesError(f"the activations in {source} hold {start} rows but the targets {n_images}: "
                               "is a split file missing?")


def _check_rows(source: Path, layers: list[_SourceLayer]) -> int:
    """The number of images, once every layer is seen to hold as many rows as
    its targets (counted before anything is written)."""
    first = layers[0]
    for layer in layers[1:]:
        if not np.array_equal(layer.targets, first.targets) or layer.file_names != first.file_names:
            raise LegacyFilesError(f"{layer.folder} and {first.folder} hold different targets or file names: "
                            "import them one at a time")
    n_images = len(first.targets)
    if n_images == 0:
        raise LegacyFilesError(f"{first.folder}: targets are empty, nothing to import")
    for layer in layers:
        rows = sum(f.count_rows() for f in layer.files)
        if rows != n_images:
            raise LegacyFilesError(f"the activations in {source} hold {rows} rows but the targets {n_images}: "
                            "is a split file missing?")
    return n_images


def _import_attrs(source: Path, layers: list[_SourceLayer], layout: Layout, model_name: str,
                  image_layout: str, command_line: str | None) -> dict:
    """Root attributes of an imported store: what is known, and ``imported_from``
    with every source file's SHA-256."""
    first, specs = layers[0], layout.layers
    imported_from = {
        "path": str(source.resolve()), "original_format": first.files[0].original_format,
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
        "compression": layout.compression, "n_images": layout.n_rows,
    }
    fields = {
        "model_name": model_name, "weights": IMPORTED, "weights_sha256": None, "preprocessing": IMPORTED,
        "dtype": specs[0].dtype, "compression": layout.compression, "compression_level": layout.level,
        "chunk_images": layout.chunk_images, "flatten_acts": False,
        "torch_version": IMPORTED, "torchvision_version": IMPORTED, "device": IMPORTED,
        "rnd_seed": None, "fraction": 1.0, "in_path": str(source.resolve()), "image_layout": image_layout,
        "things": False, "n_images": layout.n_rows,
    }
    return root_attrs(fields, fingerprint, command_line=command_line, after={"imported_from": imported_from})


__all__ = ["ImportResult", "import_legacy"]
