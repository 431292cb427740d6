"""One writing run's hold on a store: create, resume or replace it; mark it complete.

``extract``, ``import-legacy`` and ``rechunk`` all open their output here, so
they share one failure policy:

- a run that fails or is interrupted keeps every row it finished, and the store
  stays marked ``status: incomplete`` (readers refuse its unwritten rows);
- running the same command again (same fingerprint) resumes it, writing only
  the missing rows;
- ``--overwrite`` removes it (never anything that is not an actstore store);
- a store of another run at the out path is refused, nothing changed.

The decision is made once per run, in :class:`OutPath`: it takes the writer
lock, looks at what is at the path (opening a store there once, for writing,
or for reading in a dry run), answers what a run needs to know before it
creates anything (the stored codec, write blocks, fingerprint), refuses what
the run must not touch, and then creates the store or hands on the writer it
opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import StoreConflictError
from .backends.base import StoreWriter
from .backends.registry import create_writer, format_at, reader_class, remove_store, reopen_writer, writer_class
from .io import lock as writer_lock
from .io.location import Location, exists, is_url, join
from .layout import Layout
from .metadata.provenance import completed, fingerprint_differences, is_complete, skipped_rows

# (key, stored, now) -> the refusal for a fingerprint that differs at key (naming the
# flag to change), None when no one flag explains it, or "" for a key that only
# follows from another difference (chunks follow --dtype).
Explain = Callable[[str, Any, Any], "str | None"]


class Closing:
    """A context manager that calls ``close()`` on the way out, whatever happens;
    when an error is on its way out, that error is the one reported (a full
    disk fails the close as well, and its second error would hide the first)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception:  # the error on its way is the one to report
            pass


class StoreSession(Closing):
    """An open store being written: ``writer``, and whether it was ``resumed``.

    Use it as a context manager: it closes the writer and releases the writer
    lock whatever happens, and never deletes what was written.
    """

    def __init__(self, writer: StoreWriter, path: Location, resumed: bool,
                 held: writer_lock.WriterLock | None) -> None:
        self.writer, self.path, self.resumed, self._lock = writer, path, resumed, held

    def written(self) -> np.ndarray:
        """The (N,) mask of rows already written."""
        return self.writer.written()

    def skipped(self) -> np.ndarray:
        """The (N,) mask of rows left out as unreadable images (never written)."""
        return skipped_rows(self.writer.root_attrs(), len(self.writer.written()))

    def complete(self) -> bool:
        """Mark the store complete when every row is written or skipped as an
        unreadable image (:func:`~.metadata.provenance.is_complete`); say whether it is."""
        if not _rows_complete(self.writer):
            return False
        self.writer.update_attrs(completed())
        return True

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            if self._lock is not None:
                self._lock.release()


class OutPath(Closing):
    """What is at a writing run's out path, looked at once.

    A real run first takes the writer lock of its ``shard`` (refusing a live
    writer at once) and, when a store is there, reopens it for writing: the
    run's only open before it completes. A ``dry_run`` takes no lock (it
    refuses a live writer all the same) and reads the store's attributes.

    Example:
        >>> with OutPath(Path("run.zarr"), "zarr") as out:            # doctest: +SKIP
        ...     out.refuse_another_run(fingerprint, overwrite=False)
        ...     session = out.open(layout, names, targets, classes, attrs)
    """

    def __init__(self, path: Location, file_format: str, *, shard: tuple[int, int] = (0, 1),
                 dry_run: bool = False) -> None:
        self.path, self.file_format, self.shard = path, file_format, shard
        self._lock: writer_lock.WriterLock | None = None
        self.writer: StoreWriter | None = None
        self.attrs: dict[str, Any] = {}
        self.block_rows: int | None = None
        if dry_run or not _parent_exists(path):   # nothing to lock yet: the run locks when it creates
            writer_lock.check_free(path, shard)
            writer_lock.check_writable(path)   # what taking the lock would refuse: a file in the way, a full disk
        else:
            self._lock = writer_lock.acquire(path, shard)
        try:
            self.state = self._look(dry_run)
        except BaseException:
            self.close()
            raise

    def _look(self, dry_run: bool) -> str:
        if not exists(self.path):
            return "absent"
        found = format_at(self.path)   # what is there, looked at once
        if found is None:
            path = self.path
            empty = isinstance(path, Path) and path.is_dir() and not any(path.iterdir())
            return "empty" if empty else "other"
        if dry_run:
            reader = reader_class(found)(self.path)
            try:
                self.attrs = reader.root_attrs()
            finally:
                reader.close()
        else:
            self.writer = writer_class(found).reopen(self.path)
            self.attrs, self.block_rows = self.writer.root_attrs(), self.writer.block_rows
        return "store"

    @property
    def stored_compression(self) -> str | None:
        """The codec of the store there (a rerun keeps it across a change of default)."""
        return self.attrs.get("compression") if self.state == "store" else None

    @property
    def stored_fingerprint(self) -> dict[str, Any]:
        return dict(self.attrs.get("fingerprint") or {})

    def refuse_another_run(self, fingerprint: Mapping[str, Any], *, overwrite: bool,
                           rerun_complete: bool = True, explain: Explain | None = None) -> None:
        """Raise what opening must refuse, changing nothing: something that is
        not a store, or (without ``overwrite``) a store of another run, or a
        complete store of this run when ``rerun_complete`` is False.

        Raises:
            StoreConflictError: naming the path and what to do.
        """
        if self.state == "other":
            raise _not_a_store(self.path)
        if self.state != "store" or overwrite:
            return
        _refuse_differences(self.path, self.stored_fingerprint, fingerprint, explain)
        if not rerun_complete and self.writer is not None and _rows_complete(self.writer):
            raise StoreConflictError(f"out path {self.path} exists (a complete store of this run); nothing was "
                                     "changed: pass --overwrite to replace it or choose another --out-path")

    def open(self, layout: Layout, file_names: Sequence[str], targets: Sequence[int], classes: Sequence[str],
             attrs: Mapping[str, Any], *, overwrite: bool = False, rerun_complete: bool = True,
             explain: Explain | None = None) -> StoreSession:
        """The run's :class:`StoreSession`: the store there resumed (same
        fingerprint), replaced (``overwrite``) or created; ownership of the lock
        and writer passes to it."""
        self.refuse_another_run(attrs["fingerprint"], overwrite=overwrite, rerun_complete=rerun_complete,
                                explain=explain)
        if self._lock is None:
            self._lock = writer_lock.acquire(self.path, self.shard)
        writer, resumed = self.writer, self.writer is not None
        if self.state == "store" and overwrite:
            self.writer.close()
            writer, resumed = None, False
            remove_store(self.path)
        elif self.state == "empty":
            self.path.rmdir()
        if writer is None:
            writer, resumed = self._create(layout, file_names, targets, classes, attrs, rerun_complete, explain)
        session = StoreSession(writer, self.path, resumed, self._lock)
        self.writer = self._lock = None   # the session owns them now
        return session

    def _create(self, layout, file_names, targets, classes, attrs, rerun_complete, explain) -> tuple[StoreWriter, bool]:
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return create_writer(self.path, self.file_format, layout, file_names, targets, classes, attrs), False
        except FileExistsError:   # another process (shard) created it first: join it
            self.writer, self.state = reopen_writer(self.path), "store"
            self.attrs = self.writer.root_attrs()
            try:
                self.refuse_another_run(attrs["fingerprint"], overwrite=False, rerun_complete=rerun_complete,
                                        explain=explain)
            except StoreConflictError:
                self.writer.close()
                self.writer = None
                raise
            writer, self.writer = self.writer, None
            return writer, True

    def close(self) -> None:
        """Release what the run did not hand to a session."""
        try:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None


def open_session(path: Location, file_format: str, layout: Layout, file_names: Sequence[str],
                 targets: Sequence[int], classes: Sequence[str], attrs: Mapping[str, Any], *,
                 overwrite: bool = False, rerun_complete: bool = True, explain: Explain | None = None,
                 shard: tuple[int, int] = (0, 1)) -> StoreSession:
    """Create the store at ``path``, or resume the one there if it is of the same
    run (equal ``attrs["fingerprint"]``), or replace it when ``overwrite``: what
    :class:`OutPath` decides, in one call.

    Args:
        attrs: the new store's root attributes (:func:`provenance.root_attrs`).
        rerun_complete: reopen a complete store of the same run (a rerun that
            then has nothing to do); if False, refuse it as an existing path.
        explain: ``(key, stored, now)`` -> the refusal for a fingerprint that
            differs at ``key`` (naming the flag to change), or None.
        shard: ``(I, N)``, this process's part; each has its own writer lock.

    Raises:
        StoreBusyError: another live process writes this store (this part).
        StoreConflictError: the path holds something else, or a store of
            another run, and ``overwrite`` is not set.
    """
    with OutPath(path, file_format, shard=shard) as out:
        return out.open(layout, file_names, targets, classes, attrs, overwrite=overwrite,
                        rerun_complete=rerun_complete, explain=explain)


def _parent_exists(path: Location) -> bool:
    return is_url(path) or Path(path).resolve().parent.is_dir()


def _rows_complete(writer: StoreWriter) -> bool:
    written = writer.written()
    return is_complete(written, skipped_rows(writer.root_attrs(), len(written)))


def _not_a_store(path: Location) -> StoreConflictError:
    if isinstance(path, Path) and not path.is_dir():   # a file: suggest a sibling, not a path inside it
        suggestion = path.with_name(f"{path.stem}-activations{path.suffix or '.zarr'}")
    else:
        suggestion = join(path, "store.zarr")
    return StoreConflictError(f"out path {path} exists and is not an actstore store; nothing was changed: "
                              f"choose a new path such as {suggestion}")


def _refuse_differences(path: Location, stored: Mapping[str, Any], current: Mapping[str, Any],
                        explain: Explain | None) -> None:
    differences = fingerprint_differences(stored, current)
    if not differences:
        return
    # one flag's value to change, when that is all that differs; else the whole difference
    keys = [k for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k)]
    messages = [explain(k, stored.get(k), current.get(k)) for k in keys] if explain else [None]
    causes = [m for m in messages if m != ""]
    if causes and all(causes):
        raise StoreConflictError(f"out path {path}: {causes[0]}")
    keys = ", ".join(d.split(" ")[0] for d in differences)
    raise StoreConflictError(f"out path {path} holds a store from a different run ({keys} "
                             f"differ: {differences[0]}); pass --overwrite to replace it "
                             "or choose another --out-path")


__all__ = ["Closing", "OutPath", "StoreSession", "open_session"]
