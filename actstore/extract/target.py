"""Where a run writes, resolved once: a store (its backend, what is there, its codec
and write blocks) or the original text layout, and this process's rows.

The dry run and the real run resolve the same :class:`Target`, so a dry run
gives every refusal the real run would. A real run takes the writer lock here,
before the model loads (a second writer is refused at once), and opens a
store that is already there once, for writing; :meth:`Target.open` then
resumes, replaces or creates it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BadOptionError
from ..images import ImageSet
from ..legacy.files import LegacyFiles, legacy_format_of
from ..store import (
    LayerSpec,
    Layout,
    Location,
    StoreWriter,
    choose_shard_rows,
    detect_format,
    formats_that,
    stored_bytes,
    suffixes_of,
    writer_class,
)
from ..store.session import Closing, OutPath, StoreSession
from .options import ExtractOptions
from .parts import part_rows
from .record import explain_difference


class FilesSession(Closing):
    """The original layout's files opened for a run, shaped like a :class:`StoreSession`:
    never resumed, complete once every row is in."""

    resumed = False

    def __init__(self, writer: LegacyFiles) -> None:
        self.writer = writer

    def written(self) -> np.ndarray:
        return self.writer.written()

    def skipped(self) -> np.ndarray:
        return np.zeros(self.writer.n_rows, dtype=bool)   # the layout cannot leave a row out

    def complete(self) -> bool:
        return bool(self.writer.written().all())

    def close(self) -> None:
        self.writer.close()


class Target(Closing):
    """A run's output, resolved from its options once (see the module docstring).

    ``legacy`` is the original layout's format (``txt``, ``npy``) when the out
    path asks for it, else None and ``out`` is the store's :class:`OutPath`.
    """

    def __init__(self, options: ExtractOptions) -> None:
        self.path: Location = options.out_location
        self.options = options
        self.legacy = legacy_format_of(self.path, options.file_format)
        self.out: OutPath | None = None
        if self.legacy is not None:
            self.file_format = self.legacy
            if options.shard[1] > 1:
                _refuse_parts(self.legacy)
            return
        self.file_format = detect_format(self.path, options.file_format)
        if options.shard[1] > 1 and not writer_class(self.file_format).supports_concurrent_writers:
            _refuse_parts(self.file_format)
        self.out = OutPath(self.path, self.file_format, shard=options.shard, dry_run=options.dry_run)

    @property
    def backend(self) -> type[StoreWriter] | type[LegacyFiles]:
        return LegacyFiles if self.legacy else writer_class(self.file_format)

    @property
    def compression(self) -> str:
        """The codec: ``--compression``, else the store's own on a rerun (so a rerun
        resumes across a change of default), else the format's default."""
        if self.options.compression:
            return self.options.compression
        if self.legacy:
            return "none"   # text and npy files are not compressed
        stored = None if self.options.overwrite else self.out.stored_compression
        return stored or self.backend.default_compression

    def shard_rows(self, specs: Sequence[LayerSpec], n_rows: int) -> int:
        """Rows per shard of a new store (0: a format without shards, or unsharded)."""
        if self.legacy:
            if self.options.zarr_shard_rows:
                raise BadOptionError(f"--zarr-shard-rows applies to {' or '.join(formats_that('supports_shards'))} "
                                     f"stores, not {self.legacy} files")
            return 0
        return choose_shard_rows(self.file_format, specs, n_rows, self.options.chunk_images,
                                 self.options.zarr_shard_rows)

    def block_rows(self, layout: Layout) -> int:
        """Rows per write block: a store already there keeps its own (one
        written before shards: chunks), else the layout's."""
        return (self.out.block_rows if self.out is not None and not self.options.overwrite else None) \
            or layout.block_rows

    def part_rows(self, layout: Layout) -> tuple[int, int]:
        """This process's rows ``[start, stop)`` (``--shard I/N``): whole write blocks."""
        return part_rows(layout.n_rows, self.block_rows(layout), *self.options.shard)

    def refuse(self, layout: Layout, attrs: Mapping[str, Any]) -> None:
        """Raise what opening would refuse, changing nothing (so ``--dry-run`` does too)."""
        if self.legacy:
            if not self.options.overwrite:
                LegacyFiles.refuse_existing(Path(self.path), str(attrs["model_name"]), layout, overwrite=False)
            return
        self.out.refuse_another_run(attrs["fingerprint"], overwrite=self.options.overwrite,
                                    explain=explain_difference)

    def most_bytes(self, layout: Layout, rows: int) -> int:
        """The most ``rows`` rows can take: raw bytes, or text at its widest."""
        widest = getattr(self.backend, "max_bytes_per_value", None)
        return rows * sum(spec.bytes_per_image // np.dtype(spec.dtype).itemsize
                          * (widest or np.dtype(spec.dtype).itemsize) for spec in layout.layers)

    def sample_bytes(self, layout: Layout, arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Per layer, the bytes a sample of rows takes when written as this run writes."""
        if not self.legacy:
            return stored_bytes(self.file_format, layout, arrays)
        with tempfile.TemporaryDirectory(prefix="actstore-sample-") as scratch:
            n = layout.n_rows
            files = LegacyFiles(Path(scratch), layout, [""] * n, [0] * n, file_format=self.legacy,
                                model_name="sample")
            try:
                files.write_rows(0, dict(arrays))
            finally:
                files.close()
            return files.stored_bytes()

    def file_count(self, layout: Layout) -> int | None:
        return None if self.legacy else self.backend.file_count(layout)

    def open(self, layout: Layout, images: ImageSet, attrs: Mapping[str, Any]) -> StoreSession | FilesSession:
        """The run's session: the store resumed, replaced or created, or the layout's files."""
        if self.legacy:
            return FilesSession(LegacyFiles(Path(self.path), layout, images.file_names, images.targets,
                                            file_format=self.legacy, model_name=str(attrs["model_name"]),
                                            overwrite=True))   # refuse() refused others' files already
        return self.out.open(layout, images.file_names, images.targets, images.classes, attrs,
                             overwrite=self.options.overwrite, explain=explain_difference)

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


def _refuse_parts(file_format: str) -> None:
    usable = formats_that("supports_concurrent_writers")
    raise BadOptionError(f"--shard needs a {' or '.join(n.capitalize() for n in usable)} store: "
                         f"{file_format} has no safe concurrent writers; use an out path ending in "
                         f"{suffixes_of(usable)}")
