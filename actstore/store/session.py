"""One writing run's hold on a store: create, resume or replace it; mark it complete.

``extract``, ``import-legacy`` and ``rechunk`` all open their output here, so
they share one failure policy:

- a run that fails or is interrupted keeps every row it finished, and the store
  stays marked ``status: incomplete`` (readers refuse its unwritten rows);
- running the same command again (same fingerprint) resumes it, writing only
  the missing rows;
- ``--overwrite`` removes it (never anything that is not an actstore store);
- a store of another run at the out path is refused, nothing changed.

The original txt/npy layout is never resumed: its writer removes its own
unfinished files, and ``--overwrite`` replaces finished ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import StoreConflictError
from . import lock as writer_lock
from .base import Layout, StoreWriter
from .location import Location, exists, join
from .provenance import completed, fingerprint_differences, is_complete, skipped_rows
from .registry import create_writer, is_store, open_reader, remove_store, reopen_writer, writer_class


class StoreSession:
    """An open store being written: ``writer``, and whether it was ``resumed``.

    Every writing command opens its store through :func:`open_session`, so a
    per-store writer lock, when one is needed, is taken in that one place.

    Use it as a context manager: it closes the writer whatever happens and
    never deletes what was written (see the module's failure policy).
    """

    def __init__(self, writer: StoreWriter, path: Location, resumed: bool,
                 held: writer_lock.WriterLock) -> None:
        self.writer, self.path, self.resumed, self._lock = writer, path, resumed, held

    def written(self) -> np.ndarray:
        """The (N,) mask of rows already written."""
        return self.writer.written()

    def complete(self) -> bool:
        """Mark the store complete when every row is written or skipped as an
        unreadable image (:func:`~.provenance.is_complete`); say whether it is."""
        if not _rows_complete(self.writer):
            return False
        self.writer.update_attrs(completed())
        return True

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            self._lock.release()

    def __enter__(self) -> "StoreSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_session(path: Location, file_format: str, layout: Layout, file_names: Sequence[str],
                 targets: Sequence[int], classes: Sequence[str], attrs: Mapping[str, Any], *,
                 overwrite: bool = False, rerun_complete: bool = True,
                 explain: Callable[[str, Any, Any], str | None] | None = None,
                 shard: tuple[int, int] = (0, 1)) -> StoreSession:
    """Create the store at ``path``, or resume the one there if it is of the same
    run (equal ``attrs["fingerprint"]``), or replace it when ``overwrite``.

    Args:
        attrs: the new store's root attributes (:func:`provenance.root_attrs`).
        rerun_complete: reopen a complete store of the same run (a rerun that
            then has nothing to do); if False, refuse it as an existing path.
        explain: ``(key, stored, now)`` -> the refusal for a fingerprint that
            differs at ``key`` (naming the flag to change), or None.
        shard: ``(I, N)``, this process's shard; each has its own writer lock
            (:mod:`.lock`), taken before anything at the path is read or changed.

    Raises:
        StoreBusyError: another live process writes this store (this shard).
        StoreConflictError: the path holds something else, or a store of
            another run, and ``overwrite`` is not set.
    """
    held = writer_lock.acquire(path, shard)
    try:
        writer, resumed = _open_writer(path, file_format, layout, file_names, targets, classes, attrs,
                                       overwrite, rerun_complete, explain)
    except BaseException:
        held.release()
        raise
    return StoreSession(writer, path, resumed, held)


def _open_writer(path: Location, file_format: str, layout: Layout, file_names: Sequence[str],
                 targets: Sequence[int], classes: Sequence[str], attrs: Mapping[str, Any], overwrite: bool,
                 rerun_complete: bool, explain) -> tuple[StoreWriter, bool]:
    backend = writer_class(file_format)
    if not backend.supports_resume:   # written afresh each time
        backend.make_way(Path(path), layout, attrs, overwrite)
        return create_writer(path, file_format, layout, file_names, targets, classes, attrs), False
    current = attrs["fingerprint"]
    if exists(path):
        if not is_store(path):
            empty_dir = isinstance(path, Path) and path.is_dir() and not any(path.iterdir())
            if not empty_dir:
                raise _not_a_store(path)
            path.rmdir()
        elif overwrite:
            remove_store(path)
        else:
            return _reopen_same_run(path, current, rerun_complete, explain)
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer = create_writer(path, file_format, layout, file_names, targets, classes, attrs)
    except FileExistsError:   # another shard created it first: join it
        return _reopen_same_run(path, current, rerun_complete, explain)
    return writer, False


def check_no_writer(path: Location, shard: tuple[int, int] = (0, 1)) -> None:
    """Raise :class:`~actstore.errors.StoreBusyError` when another live process
    writes ``shard`` of the store at ``path``, changing nothing: a run checks
    this before its model loads, so a second writer is refused at once."""
    writer_lock.check_free(path, shard)


def check_out_path(path: Location, file_format: str, layout: Layout, attrs: Mapping[str, Any], *,
                   overwrite: bool = False,
                   explain: Callable[[str, Any, Any], str | None] | None = None) -> None:
    """Raise what :func:`open_session` would refuse, changing nothing, so a
    ``--dry-run`` gives the real run's refusals (a live writer: see
    :func:`check_no_writer`, which a run calls first)."""
    backend = writer_class(file_format)
    if not backend.supports_resume:
        if not overwrite:
            backend.make_way(Path(path), layout, attrs, overwrite=False)
        return
    if not exists(path):
        return
    if not is_store(path):
        if not (isinstance(path, Path) and path.is_dir() and not any(path.iterdir())):
            raise _not_a_store(path)
        return
    if not overwrite:
        reader = open_reader(path)
        try:
            stored = reader.root_attrs().get("fingerprint", {})
        finally:
            reader.close()
        _refuse_another_run(path, stored, attrs["fingerprint"], explain)


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


def _refuse_another_run(path: Location, stored: Mapping[str, Any], current: Mapping[str, Any],
                        explain: Callable[[str, Any, Any], str | None] | None) -> None:
    differences = fingerprint_differences(stored, current)
    if differences:
        # one flag's value to change, when that is all that differs; else the whole difference
        keys = [k for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k)]
        messages = [explain(k, stored.get(k), current.get(k)) for k in keys] if explain else [None]
        if all(messages):
            raise StoreConflictError(f"out path {path}: {messages[0]}")
        keys = ", ".join(d.split(" ")[0] for d in differences)
        raise StoreConflictError(f"out path {path} holds a store from a different run ({keys} "
                                 f"differ: {differences[0]}); pass --overwrite to replace it "
                                 "or choose another --out-path")


def _reopen_same_run(path: Location, current: Mapping[str, Any], rerun_complete: bool,
                     explain: Callable[[str, Any, Any], str | None] | None = None) -> tuple[StoreWriter, bool]:
    writer = reopen_writer(path)
    try:
        _refuse_another_run(path, writer.root_attrs().get("fingerprint", {}), current, explain)
    except StoreConflictError:
        writer.close()
        raise
    if not rerun_complete and _rows_complete(writer):
        writer.close()
        raise StoreConflictError(f"out path {path} exists (a complete store of this run); nothing was "
                                 "changed: pass --overwrite to replace it or choose another --out-path")
    return writer, True
