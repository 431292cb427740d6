"""Sweeps over a layer: the read-ahead keeps order and errors, and column
blocks are whole chunks, so every stored chunk is decoded once per pass."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from synthetic import write_store

from actstore import open_store
from actstore.analysis.blocks import LayerBlocks, read_ahead


def test_read_ahead_keeps_the_order_loads_one_ahead_and_raises_a_loads_error():
    started, threads = [], set()

    def load(k):
        started.append(k)
        threads.add(threading.current_thread().name)
        return k

    seen = []
    for value in read_ahead(lambda k=k: load(k) for k in range(5)):
        seen.append(value)
        assert max(started) <= value + 1      # never more than the next one read ahead
    assert seen == list(range(5)) and threads == {"actstore-read-ahead_0"}

    def failing(k):
        if k == 2:
            raise OSError("chunk 2 unreadable")
        return k
    with pytest.raises(OSError, match="chunk 2"):
        list(read_ahead(lambda k=k: failing(k) for k in range(4)))


def test_column_blocks_are_whole_chunks_and_each_chunk_is_read_once(tmp_path, monkeypatch):
    import importlib
    monkeypatch.setattr(importlib.import_module("actstore.analysis.blocks"), "COLUMN_BLOCK_BYTES", 8 * 40 * 30)
    path = tmp_path / "s.zarr"
    values = write_store(path, "zarr", n=40, conv=(12, 5, 4), chunk_channels=4)
    flat = values["features.0"].reshape(40, -1).astype(np.float64)
    with open_store(path) as store:
        blocks = LayerBlocks(store, "features.0", np.arange(40))
        reads = []
        real = blocks._read
        blocks._read = lambda rows, units: reads.append(units) or real(rows, units)
        # blocks of about 30 units (1.5 channels of 20) asked for: one whole chunk of 4 channels each,
        # not a channel at a time (which would decode every chunk four times)
        parts = list(blocks.columns(max_units=10**6))
    assert [units for units in reads] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    np.testing.assert_array_equal(np.hstack(parts), flat)


@pytest.mark.parametrize("units, block", [(100, 100), (9000, 3000), (20000, 20000)])
def test_float32_products_are_summed_in_float64_over_at_most_flush_units(units, block, monkeypatch):
    from actstore.analysis import products
    from actstore.analysis.products import Backend, GramSum
    sizes = []
    real = products._syrk
    monkeypatch.setattr(products, "_syrk", lambda acc, b: sizes.append(b.shape[1]) or real(acc, b))
    x = np.random.default_rng(0).standard_normal((40, units)).astype(np.float32)
    exact = x.astype(np.float64) @ x.T.astype(np.float64)
    whole, rows = GramSum(Backend(), (40, 40), single=True), GramSum(Backend(), (15, 40), single=True)
    for first in range(0, units, block):
        part = np.ascontiguousarray(x[:, first:first + block])
        whole.add(part, part)
        rows.add(part[10:25], part)
    got = whole.result()
    assert max(sizes) <= GramSum.FLUSH_UNITS and sum(sizes) == units
    assert got.dtype == np.float64 and np.array_equal(got, got.T)
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-6 * np.abs(exact).max())
    np.testing.assert_allclose(rows.result(), exact[10:25], rtol=0, atol=1e-6 * np.abs(exact).max())


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (3, 3), (7, 4), (301, 301)])
def test_the_first_float32_part_is_widened_in_place_exactly(shape):
    from actstore.analysis.products import Backend
    backend = Backend()
    acc = np.zeros(shape)
    part = backend.first_part(acc)
    assert np.shares_memory(part, acc) and part.dtype == np.float32
    values = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    part[...] = values
    backend.widen(acc, part)
    assert np.array_equal(acc, values.astype(np.float64))
