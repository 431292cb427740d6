"""The batch loop: each batch of images through the model, its activations handed to the writer.

The model runs in the main thread; the background writer compresses and
writes; a Ctrl-C or a full disk keeps every row already written.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import config
from ..capture import Extractor
from ..errors import BadImagesError, Interrupted, OutOfSpaceError, is_disk_full
from ..images import ImageSet
from ..models import Model
from ..store import STORE_FORMATS, Layout, StoreWriter, suffixes_of
from .buffers import HostBuffers, autocast
from .loader import batches_of, decode_batch, image_loader
from .options import ExtractOptions
from .writer_thread import BackgroundWriter


def run_batches(extractor: Extractor, model: Model, images: ImageSet, todo: np.ndarray,
                writer: StoreWriter, layout: Layout, options: ExtractOptions, *,
                done_before: int, total: int, block_rows: int, stages: dict[str, float]) -> int:
    """Extract and write the rows ``todo`` in writes of whole ``block_rows``
    blocks; return how many rows were written.
    The main loop's seconds per stage are added into ``stages`` (see
    :class:`StageClock`), with the writer thread's as ``writer_busy``.

    Raises:
        Interrupted: Ctrl-C (what was written is kept).
        OutOfSpaceError: the disk filled up (what was written is kept).
        BadImagesError: an image of a batch could not be decoded, without
            ``skip_bad_images`` (with it, the image's row is left out and
            recorded in ``skipped_images`` with its reason).
    """
    if not len(todo):
        return 0
    pending = np.zeros(len(images), dtype=bool)
    pending[todo] = True
    loader = image_loader(images, model.transform, batches_of(todo, len(images), options.batch_size),
                          options)
    progress = tqdm(total=total, initial=done_before, unit="img", disable=options.quiet,
                    file=sys.stderr, desc=options.progress_label, dynamic_ncols=True)
    writer.limit_codec_threads(config.codec_threads(options.torch_device.type, options.num_workers))
    background = BackgroundWriter(writer, block_rows, layout.n_rows, progress)
    host = HostBuffers(options.torch_device, options.batch_size, options.dtype, options.flatten_acts)
    clock = StageClock(stages)
    try:
        for batch, rows, bad in clock.timed(loader, "decode"):
            if options.decoder == "torchvision" and batch is not None:
                with clock("forward"):
                    batch, failed = decode_batch(batch, model.transform, options.torch_device)
                if failed:
                    bad = bad + [(int(rows[i]), error) for i, error in failed]
                    rows = np.delete(rows, [i for i, _ in failed])
            if bad:
                records = _unreadable(bad, images, writer, options)
                background.call(lambda records=records: writer.add_skipped(records))
            if not len(rows):
                continue
            out = host.take()
            with clock("forward"):
                _forward(extractor, model, images, batch, rows, out, host, options)
            with clock("write"):
                background.put(rows, pending[rows], out)
        with clock("write"):
            background.finish()
    except KeyboardInterrupt:
        background.finish()
        if not writer.resumable:
            raise Interrupted(f"interrupted: nothing was kept ({writer.format_name} files cannot resume); "
                              f"use a {suffixes_of(STORE_FORMATS)} out path for resumable runs") from None
        raise Interrupted(f"interrupted: {done_before + background.rows_written} of {total} "
                          "rows are kept; run the same command again to resume") from None
    except OSError as error:
        background.finish(raise_error=False)
        if not is_disk_full(error):
            raise
        kept = int(writer.written().sum()) if writer.resumable else 0
        reason = os.strerror(error.errno or errno.ENOSPC)
        raise OutOfSpaceError(f"out of disk space writing {options.out_location} ({reason}): "
                              f"{kept} of {len(images)} rows are kept; free space and run the same "
                              "command again to resume") from error
    except BaseException:
        background.finish(raise_error=False)
        raise
    finally:
        progress.close()
        stages["writer_busy"] = background.busy_seconds
    return background.rows_written


class StageClock:
    """Wall seconds the main loop spends in each stage, added into ``stages``:
    waiting for decoded batches ("decode"), running the model ("forward";
    on a GPU the kernel launches), waiting for the writer ("write"). The
    stage that takes most of a run is what limits it."""

    def __init__(self, stages: dict[str, float]) -> None:
        self.stages = stages

    @contextlib.contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - started

    def timed(self, iterable, stage: str):
        """The items of ``iterable``, each wait for the next one timed as ``stage``."""
        iterator = iter(iterable)
        while True:
            with self(stage):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item


def _unreadable(bad: list[tuple[int, str]], images: ImageSet, writer: StoreWriter,
                options: ExtractOptions) -> list[dict]:
    """Images that passed the cheap pre-check but failed to decode: with
    ``skip_bad_images`` their records for ``skipped_images`` (the row stays
    unwritten and the store completes without it); otherwise the run stops.
    The advice resumes: the same command with ``--skip-bad-images`` reopens
    the same store (removing the file would change the image list, so that
    rerun would be another run)."""
    names = ", ".join(f"{images.file_names[r]} ({error[:80]})" for r, error in bad)
    if not writer.resumable:   # its files are written in row order, with no room for a gap
        raise BadImagesError(f"cannot read {len(bad)} image(s): {names}; {writer.format_name} files cannot "
                             "leave out a row once started and nothing was kept: fix or remove them and run "
                             "again")
    if not options.skip_bad_images:
        raise BadImagesError(f"cannot read {len(bad)} image(s): {names}; finished rows are kept: run the "
                             "same command with --skip-bad-images to resume and leave them out (recorded in "
                             "the store), or fix them and run again")
    warnings.warn(f"skipped {len(bad)} unreadable image(s), recorded in skipped_images: {names}", stacklevel=2)
    return [{"file_name": images.file_names[r], "reason": error[:200], "row": int(r)} for r, error in bad]


def _forward(extractor: Extractor, model: Model, images: ImageSet, batch, rows: np.ndarray, out,
             host: HostBuffers, options: ExtractOptions) -> None:
    """One batch through the model, its outputs into the host batch ``out``."""
    device = options.torch_device
    batch = batch.to(device, non_blocking=True)
    if options.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    with autocast(device, options.amp):
        if host.stream is None:   # on the CPU, straight from the hook into host memory
            extractor(batch, into=out.fill)
        else:
            out.fill_from_device(extractor(batch), host.stream)
