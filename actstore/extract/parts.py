"""Parts (``--shard I/N``): which rows this process writes, and its claim on them in the store."""
from __future__ import annotations

import math
import os
import socket

from ..errors import StoreConflictError
from ..store import Location, StoreWriter
from ..store.metadata.provenance import now


def part_rows(n_rows: int, block_rows: int, index: int, count: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of part ``index`` of ``count``: whole write blocks
    (shards, or chunks of images), so no two processes ever write the same
    chunk, shard or ``written`` chunk.

    Example:
        >>> part_rows(100, 16, 1, 3)      # 7 blocks split 2/2/3
        (32, 64)
    """
    blocks = math.ceil(n_rows / block_rows)
    lo, hi = index * blocks // count, (index + 1) * blocks // count
    return min(lo * block_rows, n_rows), min(hi * block_rows, n_rows)


def claim(writer: StoreWriter, out_path: Location, shard: tuple[int, int], lo: int, hi: int) -> None:
    """Record this part in the store, refusing a layout that overlaps other
    processes' (parts of another count): their rows would be lost."""
    index, count = shard

    def others() -> list[str]:
        return sorted(name for name in writer.claims() if not name.endswith(f"-of-{count}"))

    def refuse(found: list[str]) -> None:
        their = int(found[0].split("-of-")[1])
        raise StoreConflictError(f"{out_path} is being written as {their} shard(s) ({', '.join(found[:4])}); "
                                 f"rows {lo}-{hi - 1} of shard {index}/{count} would overlap theirs: run "
                                 f"every process with --shard I/{their}")

    if others():
        refuse(others())
    name = f"{index}-of-{count}"
    writer.add_claim(name, {"rows": [lo, hi], "host": socket.gethostname(), "pid": os.getpid(),
                            "claimed": now()})
    if others():   # another layout claimed at the same moment: both step back
        writer.remove_claim(name)
        refuse(others())
