"""Extraction: images -> model -> store, one mini-batch at a time.

``extract()`` below reads top to bottom as the run goes; each step is one
module: ``options`` (validated once), ``loader`` (images and decoding),
``prepare`` (model, hooks, layout), ``space`` (free space, dry run),
``shards`` (this process's rows), ``record`` (fingerprint, provenance),
``loop`` (the batches), ``buffers`` and ``writer_thread`` (host memory and the
background writer). The store's lifecycle is :mod:`actstore.store.session`.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadOptionError, Interrupted
from ..plan import Plan
from ..store import (Location, default_compression, formats_that, output_format, suffixes_of,
                     writer_class)
from ..store.integrity import rows_to_recompute
from ..store.provenance import skipped_rows
from ..store.session import check_no_writer, check_out_path, open_session
from .loader import scan_images
from .loop import run_batches
from .options import ExtractOptions, resolve_device
from .prepare import hook_and_lay_out, ready_model
from .record import explain_difference, fingerprint, store_attrs
from .shards import claim, rows_of, shard_rows
from .space import check_space


@dataclass
class ExtractResult:
    """What a run did: where the store is and how many rows it holds."""

    path: Path
    file_format: str
    n_images: int
    rows_written: int
    rows_this_run: int
    seconds: float
    layers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    resumed: bool = False
    # What was written, for messages: "store", or "files" for the original text layout.
    output: str = "store"
    # rows of images found unreadable mid-run (skip_bad_images): never written
    rows_skipped: int = 0
    shard: tuple[int, int] | None = None
    shard_rows: tuple[int, int] | None = None
    plan: Plan | None = None
    # Seconds: "setup" before the first batch, then the main loop's stages
    # (decode, forward, write) and the writer thread's busy time: which
    # stage limits the run (docs/benchmarks.md, "GPU").
    stages: dict[str, float] = field(default_factory=dict)

    # every row written or skipped (store.provenance.is_complete, as the session decides)
    complete: bool = False


def extract(options: ExtractOptions | None = None, /, **kwargs) -> ExtractResult:
    """Extract ``module_names`` of a model for every image under ``in_path`` into one store.

    Takes an :class:`ExtractOptions`, or its fields as keywords. Running again
    on an incomplete store from the same configuration resumes it. Images are
    checked cheaply first: bad ones stop the run before anything is written,
    naming each, unless ``skip_bad_images`` leaves them out (and records them in
    the store's ``skipped_images`` attribute). ``shard="I/N"`` makes this process
    extract only its share of the rows (whole chunks) into the same store.
    ``dry_run`` writes nothing and returns the :class:`~actstore.plan.Plan` in
    ``result.plan``; a run whose measured estimate exceeds the free space
    refuses to start unless ``force``.

    Returns:
        An :class:`ExtractResult`.

    Raises:
        UserError: any input a user can fix, with a one-line message (the
            subclasses in :mod:`actstore.errors` say which kind).

    Example:
        >>> extract(model_name="alexnet", module_names=["features.11", "classifier.4"],
        ...         in_path="images", out_path="alexnet.zarr")                  # doctest: +SKIP
    """
    started = time.perf_counter()
    options = options if options is not None else ExtractOptions(**kwargs)
    out_path, file_format = _output(options)
    check_no_writer(out_path, options.shard)   # before the model loads: a second writer is refused at once
    images, skipped = scan_images(options)
    if options.batch_size > len(images):   # no buffers for images that are not there
        options = dataclasses.replace(options, batch_size=len(images))
    model = ready_model(options)
    extractor, layout = hook_and_lay_out(model, options, len(images), file_format)
    lo, hi = rows_of(layout, options.shard)
    attrs = store_attrs(model, images, layout, options, skipped)
    # the refusals of the real run, before the space check measures anything (and so for --dry-run)
    check_out_path(out_path, file_format, layout, attrs, overwrite=options.overwrite, explain=explain_difference)
    plan = check_space(extractor, model, images, layout, file_format, out_path, hi - lo, options)
    result = ExtractResult(path=out_path, file_format=file_format, n_images=len(images), rows_written=0,
                           rows_this_run=0, seconds=0.0, plan=plan, shard_rows=(lo, hi),
                           layers={s.module_name: s.shape for s in layout.layers},
                           shard=options.shard if options.shard[1] > 1 else None,
                           output=writer_class(file_format).output_noun)
    if options.dry_run:
        result.seconds, result.shard, result.shard_rows = time.perf_counter() - started, None, None
        return result
    with open_session(out_path, file_format, layout, images.file_names, images.targets, images.classes,
                      attrs, overwrite=options.overwrite, shard=options.shard,
                      explain=explain_difference) as session:
        # A store opened again keeps its own write blocks (one written before shards: chunks).
        block_rows = session.writer.block_rows or layout.block_rows
        lo, hi = shard_rows(len(images), block_rows, *options.shard)
        if session.writer.supports_resume:
            claim(session.writer, out_path, options.shard, lo, hi)
        done = session.written() | skipped_rows(session.writer.root_attrs(), len(images))
        if session.resumed and session.writer.readable:   # rows whose data is gone (--repair: or corrupt)
            done &= ~rows_to_recompute(out_path, block_rows, decode=options.repair)
        todo = np.flatnonzero(~done[lo:hi]) + lo
        result.stages["setup"] = time.perf_counter() - started
        result.rows_this_run = run_batches(extractor, model, images, todo, session.writer, layout, options,
                                           done_before=(hi - lo) - len(todo), total=hi - lo,
                                           block_rows=block_rows, stages=result.stages)
        result.complete = session.complete()
        result.rows_written, result.resumed = int(session.written().sum()), session.resumed
        result.rows_skipped = int(skipped_rows(session.writer.root_attrs(), len(images)).sum())
        result.shard_rows = (lo, hi)
    result.seconds = time.perf_counter() - started
    return result


def _output(options: ExtractOptions) -> tuple[Location, str]:
    """Where the run writes, and in which format (refusing shards of a format
    without safe concurrent writers); settles the codec when none was given."""
    out_path = options.out_location
    file_format = output_format(out_path, options.file_format)
    options.compression = options.compression or default_compression(out_path, file_format,
                                                                      resume=not options.overwrite)
    if options.shard[1] > 1 and not writer_class(file_format).supports_concurrent_writers:
        usable = formats_that("supports_concurrent_writers")
        raise BadOptionError(f"--shard needs a {' or '.join(n.capitalize() for n in usable)} store: "
                             f"{file_format} has no safe concurrent writers; use an out path ending in "
                             f"{suffixes_of(usable)}")
    return out_path, file_format


class _CallableModule(types.ModuleType):
    """``actstore.extract`` is both this package and the function: importing the
    package sets the attribute ``actstore.extract`` to the package, so the
    package calls :func:`extract` when called, and either works."""

    def __call__(self, options: ExtractOptions | None = None, /, **kwargs) -> ExtractResult:
        return extract(options, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["ExtractOptions", "ExtractResult", "Interrupted", "extract", "fingerprint", "resolve_device",
           "shard_rows"]
