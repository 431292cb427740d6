"""The background writer: a thread that gathers finished batches into whole-chunk blocks and writes them.

Fed through a bounded queue, so memory stays at a few batches whatever the
image count; its errors surface in the main thread.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Mapping

import numpy as np

from .. import config
from ..store import StoreWriter
from .buffers import HostBatch


class RowBuffer:
    """Gathers batches into blocks that end on multiples of ``block_rows``
    (a writer's ``stream_rows``: a chunk's rows where it streams shards,
    else ``Layout.block_rows``), so every write fills whole chunks or shards
    (no read-modify-write, none shared between processes).

    It holds fewer than ``block_rows`` rows of every layer between batches:
    a batch's aligned rows are written straight from it, and only the rows
    that complete a held block, or are held for the next one, are copied.
    """

    def __init__(self, block_rows: int, n_rows: int) -> None:
        self.chunk, self.n_rows = block_rows, n_rows
        self.start: int | None = None                 # the first row held
        self.held: dict[str, np.ndarray] = {}

    @property
    def length(self) -> int:
        return len(next(iter(self.held.values()))) if self.held else 0

    def add(self, rows: np.ndarray, arrays: Mapping[str, np.ndarray]):
        for run in np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows) != 1) + 1):
            if not len(run):
                continue
            first = int(rows[run[0]])
            part = {k: v[run[0]:run[-1] + 1] for k, v in arrays.items()}
            if self.held and first != self.start + self.length:
                yield from self.flush()
            if self.held:   # complete the held block: a copy of fewer than block_rows rows
                end = min(self.n_rows, (self.start // self.chunk + 1) * self.chunk)
                need = end - first
                joined = {k: np.concatenate([self.held[k], v[:need]]) for k, v in part.items()}
                if len(run) < need:
                    self.held = joined
                    continue
                self.held = {}
                yield self.start, joined
                part, first = {k: v[need:] for k, v in part.items()}, end
            count = len(next(iter(part.values())))
            stop = first + count
            aligned = stop if stop == self.n_rows else stop - stop % self.chunk
            if aligned > first:
                yield first, {k: v[:aligned - first] for k, v in part.items()}
            if stop > max(aligned, first):
                self.start = max(aligned, first)
                self.held = {k: v[self.start - first:] for k, v in part.items()}

    def flush(self):
        if self.held:
            held, self.held = self.held, {}
            yield self.start, held

    def own(self) -> None:
        """Copy the rows held back for the next block out of the arrays they
        came from, so those can be reused."""
        self.held = {k: v if v.base is None else v.copy() for k, v in self.held.items()}


class BackgroundWriter:
    """A thread that writes queued batches; errors surface in the main thread."""

    def __init__(self, writer: StoreWriter, block_rows: int, n_rows: int, progress) -> None:
        self.writer, self.progress = writer, progress
        self.buffer = RowBuffer(writer.stream_rows or block_rows, n_rows)
        self.queue: queue.Queue = queue.Queue(maxsize=config.WRITE_QUEUE_BATCHES)
        self.error: BaseException | None = None
        self.rows_written = 0
        self.busy_seconds = 0.0   # time spent writing, waiting for device copies included
        self.thread = threading.Thread(target=self._loop, name="actstore-writer", daemon=True)
        self.thread.start()

    def put(self, rows: np.ndarray, keep: np.ndarray, batch: HostBatch) -> None:
        """Queue a batch; only rows where ``keep`` is set are written. Its
        buffers go back to their pool once written."""
        while True:
            self.raise_error()
            try:
                self.queue.put((rows, keep, batch), timeout=0.5)
                return
            except queue.Full:
                continue

    def call(self, action) -> None:
        """Run ``action()`` in the writer thread, in order with the writes
        queued before it (an HDF5 attribute update may reopen the file, which
        must not happen under a write)."""
        self.put(None, None, action)

    def finish(self, raise_error: bool = True) -> None:
        """Write what is queued and stop; then raise the thread's error, if
        any, unless another error is already on its way."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if raise_error:
            self.raise_error()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _write(self, blocks) -> None:
        for start, block in blocks:
            self.writer.write_rows(start, block)
            count = len(next(iter(block.values())))
            self.rows_written += count
            self.progress.update(count)

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                break
            if self.error is not None:
                continue  # drain so the producer never blocks
            started = time.perf_counter()
            try:
                rows, keep, batch = item
                if rows is None:
                    batch()
                    continue
                arrays = batch.arrays()
                if not keep.all():
                    rows, arrays = rows[keep], {k: v[keep] for k, v in arrays.items()}
                self._write(self.buffer.add(rows, arrays))
                self.buffer.own()   # rows kept for the next block no longer point into the batch
                batch.release()
            except BaseException as error:  # re-raised in the main thread
                self.error = error
            self.busy_seconds += time.perf_counter() - started
        if self.error is None:
            try:
                self._write(self.buffer.flush())
            except BaseException as error:
                self.error = error
