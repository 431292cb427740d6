"""Extraction: images -> model -> store, one mini-batch at a time.

``extract()`` below reads top to bottom as the run goes; each step is one
module: ``options`` (validated once), ``target`` (where it writes, resolved
once), ``loader`` (images and decoding), ``prepare`` (model, hooks, layout),
``space`` and ``plan`` (free space, dry run), ``parts`` (this process's rows),
``record`` (fingerprint, provenance), ``loop`` (the batches), ``buffers`` and
``writer_thread`` (host memory and the background writer). The store's
lifecycle is :mod:`actstore.store.session`.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Interrupted
from ..store.integrity import unmark_damaged
from .limits import jpeg_share, limit_hint
from .loader import scan_images
from .loop import run_batches, stop_on_signals
from .options import ExtractOptions, resolve_device
from .parts import claim, part_rows
from .plan import Plan
from .prepare import hook_and_lay_out, ready_model
from .record import fingerprint, store_attrs, this_run
from .space import check_space
from .target import Target


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
    # images the cheap pre-check left out (skip_bad_images): no row at all
    images_left_out: int = 0
    # this process's part (--shard I/N) and its rows [start, stop)
    part: tuple[int, int] | None = None
    part_rows: tuple[int, int] | None = None
    plan: Plan | None = None
    # Seconds: "setup" before the first batch, then the main loop's stages
    # (decode, forward, write) and the writer thread's busy time: which
    # stage limits the run (docs/performance.md, "On a GPU").
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
    ``dry_run`` writes nothing and returns the :class:`~actstore.extract.plan.Plan` in
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
    with stop_on_signals():   # SIGTERM and SIGHUP stop the run as Ctrl-C does
        return _extract(options, started)


def _extract(options: ExtractOptions, started: float) -> ExtractResult:
    with Target(options) as target:   # the writer lock and one look at the out path, before the model loads
        images, skipped = scan_images(options)
        if options.batch_size > len(images):   # no buffers for images that are not there
            options = dataclasses.replace(options, batch_size=len(images))
        model = ready_model(options)
        extractor, layout = hook_and_lay_out(model, options, images, target)
        attrs = store_attrs(model, images, layout, options, skipped)
        # the real run's refusals, before the space check (and so for --dry-run)
        target.refuse(layout, attrs, images.file_names)
        lo, hi = target.part_rows(layout)
        plan = check_space(extractor, model, images, layout, target, hi - lo, options)
        result = ExtractResult(path=target.path, file_format=target.file_format, n_images=len(images),
                               images_left_out=len(skipped),
                               rows_written=0, rows_this_run=0, seconds=0.0, plan=plan, part_rows=(lo, hi),
                               layers={s.module_name: s.shape for s in layout.layers},
                               part=options.shard if options.shard[1] > 1 else None, output=target.backend.noun)
        if options.dry_run:
            result.seconds, result.part, result.part_rows = time.perf_counter() - started, None, None
            return result
        with target.open(layout, images, attrs) as session:
            if session.writer.resumable:
                claim(session.writer, target.path, options.shard, lo, hi)
            if session.resumed and options.shard[1] == 1:   # one writer: the root attributes are its own
                session.writer.update_attrs({"runs": [*session.writer.root_attrs().get("runs", []),
                                                      this_run(images, options)]})
            done = session.written() | session.skipped()
            if session.resumed:   # rows whose data is gone (with --repair also those failing their checksum)
                done &= ~unmark_damaged(session.writer, target.path, target.block_rows(layout), (lo, hi),
                                        decode=options.repair)
            todo = np.flatnonzero(~done[lo:hi]) + lo
            result.stages["setup"] = time.perf_counter() - started
            result.rows_this_run = run_batches(extractor, model, images, todo, session.writer, layout, options,
                                               done_before=(hi - lo) - len(todo), total=hi - lo,
                                               block_rows=target.block_rows(layout), stages=result.stages)
            result.complete = session.complete()
            result.rows_written, result.resumed = int(session.written().sum()), session.resumed
            result.rows_skipped = int(session.skipped().sum())
    result.seconds = time.perf_counter() - started
    hint = None if options.quiet else limit_hint(
        result.stages, device_type=options.torch_device.type, decoder=options.decoder,
        jpeg_share=jpeg_share(images.file_names), num_workers=options.num_workers,
        compression=layout.compression, dtype=options.dtype)
    if hint:
        warnings.warn(hint, stacklevel=2)
    return result


class _CallableModule(types.ModuleType):
    """``actstore.extract`` is both this package and the function: importing the
    package sets the attribute ``actstore.extract`` to the package, so the
    package calls :func:`extract` when called, and either works."""

    def __call__(self, options: ExtractOptions | None = None, /, **kwargs) -> ExtractResult:
        return extract(options, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["ExtractOptions", "ExtractResult", "Interrupted", "extract", "fingerprint", "part_rows",
           "resolve_device"]
