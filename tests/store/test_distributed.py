"""examples/dask_distributed.py on a dask.distributed LocalCluster: exact per-class
means over a layer four times larger than a worker's memory limit, with every
worker's peak memory bounded."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from actstore import open_store
from actstore.store import FORMAT_NAME, LayerSpec, Layout, create_writer

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")
pytest.importorskip("psutil")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dask_distributed.py"
MiB = 2**20
# Per worker; the conv layer is 1.25 GiB, four times this.
MEMORY_LIMIT = 320 * MiB
DASK_CHUNK_BYTES = 8 * MiB
# A worker holds about four dask chunks at once (measured: 35 MiB above its
# baseline of ~150 MiB for 8 MiB chunks); eight leave room for allocator slack.
GROWTH_BOUND = 8 * DASK_CHUNK_BYTES


def load_example():
    spec = importlib.util.spec_from_file_location("dask_distributed_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_large_store(path: Path, n: int = 5120, shape=(64, 32, 32), units: int = 256, block: int = 256):
    """Four classes of n/4 rows; integer-valued float32 activations, so float64
    sums are exact in any order. Returns (per-class sums, counts, linear layer)."""
    conv = LayerSpec("features.0", shape, shape, "float32", (16, *shape))
    linear = LayerSpec("classifier.4", (units,), (units,), "float32", (16, units))
    targets = np.arange(n) * 4 // n
    writer = create_writer(path, "zarr", Layout(n, (conv, linear), 16, compression="lz4"),
                           [f"c{t}/{i}.png" for i, t in enumerate(targets)], targets, ["a", "b", "c", "d"],
                           {"format": FORMAT_NAME, "status": "complete"})
    units_index = np.arange(int(np.prod(shape))).reshape(shape)
    sums, linear_values = np.zeros((4, *shape)), np.empty((n, units), dtype=np.float32)
    for start in range(0, n, block):
        rows = np.arange(start, start + block)
        data = ((rows[:, None, None, None] * 7 + units_index * 3) % 11).astype(np.float32)
        linear_values[rows] = (rows[:, None] * 5 + np.arange(units) ** 2) % 13
        writer.write_rows(start, {"features.0": data, "classifier.4": linear_values[rows]})
        for t in np.unique(targets[rows]):
            sums[t] += data[targets[rows] == t].sum(axis=0, dtype=np.float64)
    writer.close()
    assert n * conv.bytes_per_image == 4 * MEMORY_LIMIT
    return sums, np.bincount(targets), linear_values


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from Linux's /proc")
def test_class_means_and_correlation_on_a_local_cluster_in_bounded_memory(tmp_path, monkeypatch):
    import psutil
    from distributed import Client, LocalCluster

    import actstore.store.read.views as analysis

    sums, counts, linear = write_large_store(tmp_path / "big.zarr")
    monkeypatch.setattr(analysis, "DASK_CHUNK_BYTES", DASK_CHUNK_BYTES)
    example = load_example()

    def baseline(path: str) -> int:   # after the imports and the first read a task makes
        import dask.array  # noqa: F401
        with open_store(path) as store:
            store["features.0"][:16]
        return psutil.Process().memory_info().rss

    def peak() -> int:
        # VmHWM, the peak RSS of this process's memory since exec; ru_maxrss
        # would report the parent's peak, carried across fork and exec by Linux.
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=MEMORY_LIMIT,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        before = client.run(baseline, str(tmp_path / "big.zarr"))
        with open_store(tmp_path / "big.zarr") as store:
            means = example.class_means(store, "features.0")
            corr = example.correlation(store, "classifier.4", rows=store.select(classes="b"), block_rows=512)
        means = dict(zip(means, dask.compute(*means.values())))
        corr = corr.compute()
        after = client.run(peak)

    assert list(means) == ["a", "b", "c", "d"]
    for k, name in enumerate(means):
        assert np.array_equal(means[name], sums[k] / counts[k])
    np.testing.assert_allclose(corr, np.corrcoef(linear[1280:2560]), rtol=0, atol=1e-12)
    assert sorted(after) == sorted(before)          # no worker was restarted
    growth = {worker: after[worker] - before[worker] for worker in after}
    assert all(0 < grown < GROWTH_BOUND for grown in growth.values()), growth
    assert all(high < MEMORY_LIMIT for high in after.values()), after


def test_the_example_script_saves_class_means_and_correlations(tmp_path):
    import os
    import subprocess
    import sys

    from synthetic import write_store

    values = write_store(tmp_path / "s.zarr", "zarr")
    done = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path / "s.zarr"), "--conv", "features.0",
                           "--linear", "classifier.4", "--rdm-class", "dog", "--workers", "1",
                           "--memory-limit", "512MiB", "--out", str(tmp_path / "out.npz")],
                          cwd=EXAMPLE.parents[1], env={**os.environ, "PYTHONPATH": str(EXAMPLE.parents[1])},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 class means of features.0 (6, 5, 4) and a (14, 14) correlation matrix of classifier.4" in done.stdout
    saved = np.load(tmp_path / "out.npz")
    assert saved["classes"].tolist() == ["cat", "dog", "zebra"]
    expected = [values["features.0"][rows].mean(axis=0, dtype=np.float64) for rows in (slice(0, 14), slice(14, 28), slice(28, 40))]
    np.testing.assert_allclose(saved["class_means"], np.stack(expected), rtol=1e-12)
    np.testing.assert_allclose(saved["correlation"], np.corrcoef(values["classifier.4"][14:28]), rtol=0, atol=1e-12)
