"""One writer per store (per shard): a lock that dies with its holder.

A local store is locked with an OS file lock (``flock``) on a small file
beside it, ``.<name>.<I>-of-<N>.lock``, held for the writer's lifetime: the
kernel releases it when the process ends however it ends (``kill -9``
included), so a dead writer never blocks the next run. The file records who
holds it (host, pid, since when) for the message that refuses a second writer.

An object store (``s3://``) has no file locks: there the writer keeps a lease
object beside the store, ``.<name>.<I>-of-<N>.lease``, with its host, pid and
a heartbeat it renews every ``LEASE_BEAT_SECONDS``. Another process takes it
over only once the heartbeat is older than ``LEASE_SECONDS``, or at once when
the holder ran on this host and its pid is gone.

Each ``--shard I/N`` has its own lock, so shards write in parallel while two
processes claiming the same shard (or two unsharded runs, ``0-of-1``) are not.
"""
from __future__ import annotations

import fcntl
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from pathlib import Path

from ...errors import StoreBusyError
from ..metadata.provenance import now
from .location import Location, filesystem, identity, is_url

# A lease whose heartbeat is older than this is a dead writer's (seconds).
LEASE_SECONDS = 60.0
# How often a live writer renews its lease: several beats fit in one lease, so
# a slow request or two never lets it lapse.
LEASE_BEAT_SECONDS = 10.0

_held: dict[str, "WriterLock"] = {}   # identity -> the locks this process holds


def held_here(path: Location) -> bool:
    """Whether this process holds a writer lock on the store at ``path``: then no
    other writer is alive, and a stale "open for write" mark may be cleared."""
    return any(key.startswith(identity(path) + "#") for key in _held)


def acquire(path: Location, shard: tuple[int, int] = (0, 1)) -> "WriterLock":
    """Take the writer lock of ``shard`` of the store at ``path`` (which need not
    exist yet), or raise :class:`StoreBusyError` naming the live holder.

    Example:
        >>> with acquire(Path("run.zarr")):      # doctest: +SKIP
        ...     write_rows()
    """
    lock = (LeaseLock if is_url(path) else FileLock)(path, shard)
    lock.take()
    _held[lock.key] = lock
    return lock


def check_free(path: Location, shard: tuple[int, int] = (0, 1)) -> None:
    """Raise :class:`StoreBusyError` when a live process holds the writer lock
    of ``shard`` of the store at ``path``; take nothing and create nothing
    (so a ``--dry-run``, or a run before its model loads, is refused at once)."""
    lock = (LeaseLock if is_url(path) else FileLock)(path, shard)
    owner = lock.holder()
    if owner is not None:
        raise lock.refuse(owner)


class WriterLock:
    """A held lock; ``release()`` (or leaving the ``with`` block) gives it up."""

    suffix = ".lock"

    def __init__(self, path: Location, shard: tuple[int, int]) -> None:
        self.path, self.shard = path, shard
        self.name = f"{shard[0]}-of-{shard[1]}"
        self.key = f"{identity(path)}#{self.name}"
        name = posixpath.basename(str(path).rstrip("/"))
        self.lock_path = posixpath.join(posixpath.dirname(str(path).rstrip("/")),
                                        f".{name}.{self.name}{self.suffix}")

    def owner(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "since": now()}

    def refuse(self, owner: dict) -> StoreBusyError:
        what = f"{self.path}" if self.shard == (0, 1) else f"shard {self.shard[0]}/{self.shard[1]} of {self.path}"
        who = (f"host {owner.get('host', '?')}, pid {owner.get('pid', '?')}, since {owner.get('since', '?')}"
               if owner else "owner unknown")
        return StoreBusyError(f"{what} is being written by another process ({who}): wait for it to finish, "
                              "or stop it and run this again to resume")

    def take(self) -> None:
        raise NotImplementedError

    def holder(self) -> dict | None:
        """Who holds this lock now (a live writer), or None; takes nothing."""
        raise NotImplementedError

    def release(self) -> None:
        _held.pop(self.key, None)

    def __enter__(self) -> "WriterLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class FileLock(WriterLock):
    def take(self) -> None:
        path = Path(self.lock_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self.refuse(_read_json(path)) from None
            # The holder before us may have removed the file as we opened it:
            # then our lock is on a file nobody else will see; take the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self.owner()).encode())
        os.fsync(fd)
        self._fd = fd

    def holder(self) -> dict | None:
        if self.key in _held:
            return None   # this process: not another writer
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_json(Path(self.lock_path))
        finally:
            os.close(fd)   # closing gives up the shared lock, if it was taken
        return None

    def release(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            Path(self.lock_path).unlink(missing_ok=True)   # while still held: see take()
            os.close(fd)
        super().release()


class LeaseLock(WriterLock):
    suffix = ".lease"

    def __init__(self, path: Location, shard: tuple[int, int]) -> None:
        super().__init__(path, shard)
        self._fs, self._inner = filesystem(self.lock_path)

    def take(self) -> None:
        current = self._read()
        if current and not self._stale(current):
            raise self.refuse(current)
        self._token = uuid.uuid4().hex
        self._lease = {**self.owner(), "token": self._token}
        self._beat()
        time.sleep(0.2)   # two takers at the same moment: the last write wins, the other steps back
        current = self._read()
        if current.get("token") != self._token:
            raise self.refuse(current)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name="actstore-lease")
        self._thread.start()

    def holder(self) -> dict | None:
        if self.key in _held:
            return None
        current = self._read()
        return current if current and not self._stale(current) else None

    def _read(self) -> dict:
        try:
            return json.loads(self._fs.cat_file(self._inner))
        except (FileNotFoundError, ValueError):
            return {}

    def _beat(self) -> None:
        self._lease["heartbeat"] = time.time()
        self._fs.pipe_file(self._inner, json.dumps(self._lease).encode())

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_BEAT_SECONDS):
            try:
                self._beat()
            except Exception:   # a failed beat is retried at the next; the lease outlasts several
                pass

    @staticmethod
    def _stale(lease: dict) -> bool:
        if time.time() - float(lease.get("heartbeat", 0)) > LEASE_SECONDS:
            return True
        if lease.get("host") == socket.gethostname():
            try:
                os.kill(int(lease["pid"]), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, KeyError, ValueError):
                pass
        return False

    def release(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None and not stop.is_set():
            stop.set()
            self._thread.join()
            if self._read().get("token") == self._token:
                self._fs.rm_file(self._inner)
        super().release()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
