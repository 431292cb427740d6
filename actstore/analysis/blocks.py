"""What every analysis shares: opening a store or a path, resolving a layer
and its rows (with the refusals), turning a memory budget into block sizes,
and sweeps over a layer in bounded memory.

A *column sweep* reads one block of units (along the layer's split axis, in
whole store chunks where the budget allows) for every selected row at once,
as a float64 ``(n, units in block)`` matrix: Gram matrices accumulate over
these. A *row sweep* reads blocks of whole rows, ``(rows in block, units)``:
sums, covariances and projections accumulate over those. Each sweep reads
every stored chunk of the selected rows once and counts as one pass.
"""
from __future__ import annotations

import contextlib
import difflib
import math
import re
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from ..errors import (
    BadOptionError,
    IncompleteStoreError,
    LayerNotFoundError,
    MemoryBudgetError,
    NanRowsError,
    TooFewRowsError,
)
from ..store import Store, open_store

T = TypeVar("T")
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
# Share of the budget that read blocks (the float32 read, its float64 copy
# and the reader's own temporaries) may take; results take the rest.
READ_SHARE = 0.4
# Per value read: as stored (float32), as float64, the block before it still
# in use (the next block is read while the last is multiplied), temporaries.
BYTES_READ = 4 + 8 + 8 + 4
# A column block's float64 bytes at most: blocks this size keep BLAS at full
# speed, and several per pass let reading overlap the products.
COLUMN_BLOCK_BYTES = 64 * 2**20


def parse_memory(value: int | float | str) -> int:
    """Bytes of a budget given as a number of bytes or ``"2GB"``, ``"512MB"``, ``"1.5GiB"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        size = int(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?I?B?)\s*", str(value).upper())
        if not match:
            raise BadOptionError(f"max_memory {value!r} is not a size: write e.g. 2GB, 512MB or a number of bytes")
        size = int(float(match.group(1)) * UNITS[match.group(2) if match.group(2) != "I" else ""])
    if size < 10**6:
        raise BadOptionError(f"max_memory {value!r} is below 1MB: give at least 1MB")
    return size


def human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"


def peak_rss() -> int:
    """This process's peak resident memory so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@contextlib.contextmanager
def opened(source: Store | Any) -> Iterator[Store]:
    """The store itself, or the store at a path opened (and closed after)."""
    if isinstance(source, Store):
        yield source
        return
    with open_store(source) as store:
        yield store


def resolve_layer(store: Store, layer: str) -> str:
    """``layer`` if the store holds it, else a one-line error naming close names."""
    if layer in store:
        return layer
    close = difflib.get_close_matches(layer, store.layers, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"its layers: {', '.join(store.layers[:20])}"
    raise LayerNotFoundError(f"no layer {layer!r} in {store.path}; {hint}")


def runs(rows: Sequence[int], limit: int = 5) -> str:
    """Rows as ranges (``3-7, 12``), the first ``limit`` of them."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    parts = [f"{g[0]}" if len(g) == 1 else f"{g[0]}-{g[-1]}" for g in np.split(rows, breaks)]
    return ", ".join(parts[:limit]) + (f", ... ({len(parts) - limit} more)" if len(parts) > limit else "")


def select_rows(store: Store, rows: Any = None, minimum: int = 2) -> np.ndarray:
    """The rows an analysis reads, in the order given: default every row not
    skipped as an unreadable image. Unwritten rows are refused, naming them."""
    everything = np.arange(len(store))
    try:
        chosen = everything[~store.skipped] if rows is None else np.atleast_1d(everything[rows])
    except IndexError as error:
        raise BadOptionError(f"rows= does not select rows of {store.path} ({len(store)} rows): {error}") from None
    missing = chosen[~store.written[chosen]]
    if missing.size:
        what = "the store is incomplete" if rows is None else "some rows asked for are not written"
        raise IncompleteStoreError(f"{what}: {missing.size} row(s) of {store.path} not written "
                                   f"(rows {runs(missing)}); pass rows= without them (store.written_rows)")
    if len(chosen) < minimum:
        raise TooFewRowsError(f"{len(chosen)} row(s) selected from {store.path}: at least {minimum} are needed")
    return chosen


@dataclass
class Progress:
    """A progress bar over reads (tqdm on stderr), and the count of passes."""

    total: int = 0
    description: str = ""
    enabled: bool = True
    passes: int = 0
    started: float = field(default_factory=time.perf_counter)
    bar: Any = None

    def add(self, steps: int) -> None:
        """Announce ``steps`` more reads (a pass about to start)."""
        self.total += steps
        if self.enabled and self.bar is None:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, desc=self.description, unit="block", file=sys.stderr,
                            leave=False, dynamic_ncols=True)
        elif self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


class LayerBlocks:
    """One layer of one store, for the rows ``rows`` (in that order), read in
    float64 blocks: :meth:`columns` (every row, a block of units) or
    :meth:`row_blocks` (a block of rows, every unit). NaN rows are refused."""

    def __init__(self, store: Store, layer: str, rows: np.ndarray) -> None:
        self.store, self.layer = store, resolve_layer(store, layer)
        self.array = store[self.layer]
        self.rows = rows
        self.order = np.argsort(rows, kind="stable")
        self.sorted = rows[self.order]
        self.in_order = bool(np.all(self.order == np.arange(len(rows))))
        self.unit_shape = tuple(self.array.shape[1:])
        self.units = math.prod(self.unit_shape)
        self.axis = next((k for k in range(1, self.array.ndim) if self.array.chunks[k] < self.array.shape[k]), 1)
        self.checked = np.zeros(len(rows), dtype=bool)   # rows already checked for NaN

    @property
    def n(self) -> int:
        return len(self.rows)

    def unit_slices(self, max_units: int) -> list[slice]:
        """Slices along the split axis, each at most ``max_units`` units and
        whole chunks when one chunk fits."""
        size = self.array.shape[self.axis] if self.array.ndim > 1 else 1
        per_step = self.units // max(size, 1)
        steps = max(1, max_units // max(per_step, 1))
        chunk = self.array.chunks[self.axis] if self.array.ndim > 1 else 1
        steps = steps // chunk * chunk if steps >= chunk else steps
        return [slice(a, min(a + steps, size)) for a in range(0, size, steps)]

    def _column_step(self, max_units: int) -> int:
        """Units per column block: at most ``max_units`` (the budget) and about
        COLUMN_BLOCK_BYTES, but whole chunks of the split axis where the budget
        allows (a block cutting chunks would decode them more than once)."""
        size = self.array.shape[self.axis] if self.array.ndim > 1 else 1
        per_step = self.units // max(size, 1)
        chunk_units = per_step * (self.array.chunks[self.axis] if self.array.ndim > 1 else 1)
        target = max(COLUMN_BLOCK_BYTES // (8 * self.n), chunk_units)
        return max(1, min(max_units, target))

    def column_count(self, max_units: int) -> int:
        """How many blocks :meth:`columns` reads in one pass."""
        return len(self.unit_slices(self._column_step(max_units)))

    def _read(self, rows: np.ndarray, units: slice | None) -> np.ndarray:
        key: tuple = (slice(int(rows[0]), int(rows[-1]) + 1) if np.all(np.diff(rows) == 1) else rows,)
        if units is not None and self.array.ndim > 1:
            key += (slice(None),) * (self.axis - 1) + (units,)
        data = self.array[key]
        return data.reshape(len(rows), -1)

    def _check(self, positions: np.ndarray, block: np.ndarray) -> None:
        bad = ~np.isfinite(block.sum(axis=1))   # a NaN (or inf) anywhere in a row: a cheap reduction
        if bad.any():
            rows = self.rows[positions[bad]]
            raise NanRowsError(f"{int(bad.sum())}+ row(s) of {self.layer!r} in {self.store.path} hold NaN or inf "
                               f"(rows {runs(rows)}, e.g. {self.store.file_names[rows[0]]}); "
                               "pass rows= without them")

    def read_rows(self, positions: np.ndarray) -> np.ndarray:
        """Rows ``self.rows[positions]`` (any order), every unit, as float64."""
        wanted = self.rows[positions]
        order = np.argsort(wanted, kind="stable")
        block = np.empty((len(wanted), self.units))
        block[order] = self._read(wanted[order], None)
        self._check(positions, block)
        return block

    def gram(self, positions: np.ndarray, max_units: int) -> np.ndarray:
        """The column-centred Gram matrix ``XcXcᵀ`` of rows ``self.rows[positions]``
        (sorted positions), accumulated over blocks of at most ``max_units`` units."""
        wanted = self.rows[positions]
        order = np.argsort(wanted, kind="stable")
        gram = np.zeros((len(wanted), len(wanted)))
        for units in self.unit_slices(max_units):
            part = self._read(wanted[order], units)
            block = np.empty(part.shape)
            block[order] = part
            self._check(positions, block)
            block -= block.mean(axis=0)
            gram += block @ block.T
        return gram

    def row_step(self, budget: int, extra_per_row: int = 0) -> int:
        """Rows per row block: whole store chunks of rows when they fit ``budget``."""
        per_row = self.units * BYTES_READ + extra_per_row
        rows = max(1, budget // max(per_row, 1))
        chunk = self.array.chunks[0]
        return rows // chunk * chunk if rows >= chunk else rows

    def row_blocks(self, step: int, progress: Progress | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass: ``(positions, data)`` with ``data[i]`` the row ``self.rows[positions[i]]``;
        the next block is read while the caller works on this one."""
        starts = range(0, self.n, step)
        if progress is not None:
            progress.add(len(starts))

        def load(start: int) -> tuple[np.ndarray, np.ndarray]:
            positions = self.order[start:start + step]
            block = np.asarray(self._read(self.sorted[start:start + step], None), dtype=np.float64)
            self._check(positions, block)
            return positions, block
        for positions, block in read_ahead(partial(load, start) for start in starts):
            if progress is not None:
                progress.step()
            yield positions, block

    def columns(self, max_units: int, progress: Progress | None = None, check: bool = True,
                dtype: Any = np.float64) -> Iterator[np.ndarray]:
        """One pass: ``(n, units)`` blocks (float64, or ``dtype``) over every unit, rows in
        ``self.rows`` order; the next block is read while the caller works on this one.
        ``check=False`` leaves the NaN check to the caller (:meth:`check_sums`)."""
        slices = self.unit_slices(self._column_step(max_units))
        step = max(1, (64 * 2**20) // max(1, 4 * self.units // len(slices)))
        step = max(self.array.chunks[0], step // self.array.chunks[0] * self.array.chunks[0])
        if progress is not None:
            progress.add(len(slices))

        def load(units: slice) -> np.ndarray:
            out: np.ndarray | None = None
            for start in range(0, self.n, step):
                part = self._read(self.sorted[start:start + step], units)
                if out is None:
                    out = np.empty((self.n, part.shape[1]), dtype=dtype)
                if self.in_order:
                    out[start:start + len(part)] = part
                else:
                    out[self.order[start:start + step]] = part
            if check:
                self._check(np.arange(self.n), out)
            return out
        for out in read_ahead(partial(load, units) for units in slices):
            if progress is not None:
                progress.step()
            yield out

    def check_sums(self, sums: np.ndarray) -> None:
        """Refuse NaN rows found from each row's sum over every unit (NaN or inf there)."""
        self._check(np.arange(self.n), sums[:, None])


def read_ahead(loads: Iterable[Callable[[], T]]) -> Iterator[T]:
    """The results of ``loads`` in order, each next one run on a reader thread
    while the caller works on the last: decoding (which releases the GIL)
    overlaps the caller's BLAS products. At most two results live at once."""
    loads = iter(loads)
    with ThreadPoolExecutor(1, thread_name_prefix="actstore-read-ahead") as reader:
        pending = next((reader.submit(load) for load in loads), None)
        while pending is not None:
            value = pending.result()
            pending = next((reader.submit(load) for load in loads), None)
            yield value
            del value


def column_units(n: int, read_bytes: int, layers: int = 1, extra: int = 0) -> int:
    """Units per column block so that ``layers`` blocks of ``n`` rows (plus
    ``extra`` bytes per unit) fit ``read_bytes``."""
    per_unit = n * BYTES_READ * layers + extra
    units = read_bytes // max(1, per_unit)
    if units < 1:
        raise MemoryBudgetError(f"max_memory is too small to read one unit of {n} rows "
                                f"({human(per_unit / READ_SHARE)} needed): raise it")
    return units


def tile_rows(n: int, budget: int, per_row_bytes: int) -> int:
    """Rows per result tile: as many as fit the budget's result share."""
    rows = int(budget * (1 - READ_SHARE)) // max(1, per_row_bytes)
    if rows < 1:
        raise MemoryBudgetError(f"max_memory is too small for one row of the result "
                                f"({human(per_row_bytes / (1 - READ_SHARE))} needed): raise it")
    return min(n, rows)
