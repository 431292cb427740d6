"""The open shard of every sharded array of a store, written together
(:class:`ShardRows`): rows split at shard boundaries, every layer's chunks
queued on the codec's pool at once, a shard's rows marked written only once
every array's file is in place."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .shard_stream import ShardStream


def append_together(parts: list[tuple[ShardStream, int, np.ndarray]]) -> None:
    """``stream.append(start, data)`` for every part, the chunks of all of
    them queued on the codec's pool at once (one layer's last chunks encode
    while the next layer's first are stored), each stream's in its order."""
    if not parts:
        return
    streams = [stream for stream, _, _ in parts]
    for stream in streams:
        stream.held = []
    try:
        for stream, start, data in parts:
            stream.append(start, data)
        blocks = [(stream, data, start, stream.fmt.inner_chunks, stream.fmt.encode, None)
                  for stream in streams for start, data in stream.held]
    finally:
        for stream in streams:
            stream.held = None
    for stream, index, payload in streams[0].compressor.iter_blocks(blocks):
        stream.store(index, payload)


OpenShard = Callable[[str, int, int, np.ndarray], "ShardStream | None"]


class ShardRows:
    """The open shard of every sharded array of a store, written together.

    Rows arrive in order, each call's rows split at shard boundaries. A
    shard is committed (every array's file in place) when its last row
    arrives, a row of another shard or an earlier row does, or on
    :meth:`commit` (the writer closing); only then are its rows marked
    written, so ``written`` never names a row whose shard is not in place.
    Any error aborts the open shard: its rows stay unmarked and a resumed
    run writes them again.

    ``open_shard(array, first row, start, marked)`` opens one array's stream
    at row ``start`` of the shard from ``first row`` (continuing a stored
    one; ``marked``: which of its rows are written), or returns None when it
    cannot: ``fallback(start, arrays)`` then writes and marks those rows at
    once (through zarr). ``marks(first, stop)`` reads the marks and
    ``mark(first, marks)`` stores them.
    """

    def __init__(self, shard_rows: int, n_rows: int, open_shard: OpenShard,
                 marks: Callable[[int, int], np.ndarray], mark: Callable[[int, np.ndarray], None],
                 fallback: Callable[[int, dict[str, np.ndarray]], None]) -> None:
        self.shard_rows, self.n_rows = shard_rows, n_rows
        self.open_shard, self.marks, self.mark, self.fallback = open_shard, marks, mark, fallback
        self.first: int | None = None            # the open shard's first row
        self.streams: dict[str, ShardStream] = {}
        self.marked = np.zeros(0, dtype=bool)    # its rows written (before, or given since it opened)
        self.next_row = 0

    def write(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        stop = start + len(next(iter(arrays.values())))
        try:
            for first in range(start - start % self.shard_rows, stop, self.shard_rows):
                a, b = max(start, first), min(stop, first + self.shard_rows)
                self._write_part(first, a, b, {k: v[a - start:b - start] for k, v in arrays.items()})
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """Put the open shard in place, then mark its rows."""
        if self.first is None:
            return
        first, streams, marked = self.first, self.streams, self.marked
        self.first, self.streams = None, {}
        for done, stream in enumerate(streams.values()):
            try:
                stream.commit()
            except BaseException:
                for other in list(streams.values())[done + 1:]:
                    other.abort()
                raise
        self.mark(first, marked)

    def abort(self) -> None:
        for stream in self.streams.values():
            stream.abort()
        self.first, self.streams = None, {}

    def _write_part(self, first: int, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
        if self.first is not None and (first != self.first or start < self.next_row
                                       or set(arrays) != set(self.streams)):
            self.commit()
        if self.first is None and not self._open(first, start, list(arrays)):
            self.fallback(start, arrays)
            return
        append_together([(self.streams[name], start, data) for name, data in arrays.items()])
        self.marked[start - first:stop - first] = True
        self.next_row = stop
        if stop == min(first + self.shard_rows, self.n_rows):
            self.commit()

    def _open(self, first: int, start: int, names: list[str]) -> bool:
        marked = self.marks(first, min(first + self.shard_rows, self.n_rows)).astype(bool)
        for name in names:
            stream = self.open_shard(name, first, start, marked)
            if stream is None:
                self.abort()
                return False
            self.streams[name] = stream
        self.first, self.marked = first, marked
        return True


__all__ = ["OpenShard", "ShardRows", "append_together"]
