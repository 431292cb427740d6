"""Layers as dask arrays and xarray objects, xarray.open_zarr on a store, a
reduction over a layer larger than its memory cap, and rechunking."""
from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from synthetic import SUFFIXES, write_store

from actstore import UserError, open_store
from actstore.errors import CorruptStoreError, RowsNotWrittenError
from actstore.store import FORMAT_NAME, LayerSpec, Layout, create_writer
from actstore.store.rechunk import rechunk

xr = pytest.importorskip("xarray")
da = pytest.importorskip("dask.array")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=list(SUFFIXES))
def stored(request, tmp_path_factory):
    """(path, in-memory values) of a complete 40-row store of each format."""
    path = tmp_path_factory.mktemp(request.param) / f"s{SUFFIXES[request.param]}"
    return path, write_store(path, request.param)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, image_dir, weights_file):
    """A Zarr store written by a real AlexNet run: 12 images, a conv and a linear layer."""
    from actstore import extract
    path = tmp_path_factory.mktemp("real") / "alexnet.zarr"
    extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["features.0", "classifier.4"],
            in_path=image_dir, out_path=path, batch_size=4, num_workers=0, quiet=True)
    return path


def test_to_dask_matches_the_layer(stored):
    path, values = stored
    with open_store(path) as store:
        lazy = store.to_dask("features.0")
    assert np.array_equal(lazy.compute(), values["features.0"])   # read after the store is closed


def test_to_dask_chunks_are_whole_store_chunks(stored):
    path, _ = stored
    with open_store(path) as store:
        assert store.to_dask("features.0").chunks == ((40,), (4, 2), (5,), (4,))
        assert store.to_dask("features.0", chunks=(16, 6, 5, 4)).chunks[0] == (16, 16, 8)


def test_to_dask_rows_in_the_order_given(stored):
    path, values = stored
    with open_store(path) as store:
        lazy = store.to_dask("classifier.4", rows=[33, 2, 2, 17])
    assert np.array_equal(lazy.compute(), values["classifier.4"][[33, 2, 2, 17]])


def test_to_dask_pickles_as_a_path(stored):
    path, values = stored
    with open_store(path) as store:
        lazy = store.to_dask("classifier.4")
    assert np.array_equal(pickle.loads(pickle.dumps(lazy)).compute(), values["classifier.4"])


def test_to_dask_refuses_unwritten_rows(tmp_path):
    write_store(tmp_path / "half.zarr", "zarr", written=slice(0, 16))
    with open_store(tmp_path / "half.zarr") as store:
        with pytest.raises(RowsNotWrittenError):
            store.to_dask("features.0")
        assert store.to_dask("features.0", rows=store.written_rows).shape == (16, 6, 5, 4)


@pytest.mark.parametrize("shard_rows", [16, 0])
def test_a_lost_file_raises_through_dask_and_xarray_instead_of_reading_nan(tmp_path, shard_rows):
    """A deleted shard (or chunk) of written rows raises wherever a view
    reads it, naming layer, rows and file, as store[layer] does; rows of
    other files still read their values, one int row included."""
    path = tmp_path / "s.zarr"
    values = write_store(path, "zarr", shard_rows=shard_rows)
    lost_file = path / "activations" / "features.0" / "c" / ("1/0/0/0" if shard_rows else "2/0/0/0")
    lost_file.unlink()
    rows = "16-31" if shard_rows else "16-23"
    message = f"layer 'features.0' rows {rows} are recorded as written but their data is gone \\({lost_file} missing"
    with open_store(path) as store:
        with pytest.raises(CorruptStoreError, match=message):
            store.to_dask("features.0").compute()
        with pytest.raises(CorruptStoreError, match=message):
            store.to_xarray("features.0").values
        with pytest.raises(CorruptStoreError, match=message):
            store.to_xarray().compute()
        with pytest.raises(CorruptStoreError, match="layer 'features.0' rows 20 are recorded"):
            store.to_dask("features.0", rows=[3, 20]).compute()   # only the rows asked for are named
        kept = [39, 2, 2, 33, 15]
        assert np.array_equal(store.to_dask("features.0", rows=kept).compute(), values["features.0"][kept])
        assert np.array_equal(store.to_dask("features.0", rows=slice(0, 16)).compute(), values["features.0"][:16])
        assert np.array_equal(store.to_dask("features.0", rows=7).compute(), values["features.0"][7])
        assert np.array_equal(store.to_xarray("classifier.4").values, values["classifier.4"])


@pytest.mark.parametrize("file_format", list(SUFFIXES))
def test_nan_rows_that_are_data_read_as_nan_through_dask(tmp_path, file_format):
    """NaN activations (a skipped image's row) are data, not a lost file."""
    path = tmp_path / f"n{SUFFIXES[file_format]}"
    layout = Layout(n_rows=8, layers=(LayerSpec("fc", (3,), (3,), "float32", (4, 3)),), chunk_images=4)
    values = np.arange(24, dtype="float32").reshape(8, 3)
    values[5] = np.nan
    writer = create_writer(path, file_format, layout, [f"{i}.png" for i in range(8)], [0] * 8, [],
                           {"format": FORMAT_NAME, "model_name": "synthetic", "weights": "none",
                            "status": "complete"})
    writer.write_rows(0, {"fc": values})
    writer.close()
    with open_store(path) as store:
        np.testing.assert_array_equal(store.to_dask("fc").compute(), values)
        np.testing.assert_array_equal(store.to_dask("fc", rows=[5, 1]).compute(), values[[5, 1]])


def test_to_xarray_layer_has_named_dims_and_image_coords(stored):
    path, values = stored
    with open_store(path) as store:
        acts = store.to_xarray("features.0")
        assert acts.dims == ("image", "channel", "height", "width")
        assert acts.name == "features.0"
        assert acts.coords["image"].values.tolist() == list(range(40))
        assert np.array_equal(acts.coords["file_name"].values, store.file_names)
        assert np.array_equal(acts.coords["target"].values, store.targets)
        assert acts.coords["class_name"].values[[0, 14, 28]].tolist() == ["cat", "dog", "zebra"]
        assert np.array_equal(acts.values, values["features.0"])
        assert store.to_xarray("classifier.4").dims == ("image", "unit")


def test_to_xarray_rows_keep_their_coords(stored):
    path, values = stored
    with open_store(path) as store:
        dogs = store.to_xarray("classifier.4", rows=store.select(classes="dog"))
    assert dogs.coords["image"].values.tolist() == list(range(14, 28))
    assert set(dogs.coords["class_name"].values) == {"dog"}
    assert np.array_equal(dogs.values, values["classifier.4"][14:28])


def test_to_xarray_groupby_class_mean_matches_numpy(stored):
    path, values = stored
    with open_store(path) as store:
        means = store.to_xarray("features.0").groupby("class_name").mean().compute()
    expected = np.stack([values["features.0"][rows].mean(axis=0) for rows in (slice(0, 14), slice(14, 28), slice(28, 40))])
    assert means.coords["class_name"].values.tolist() == ["cat", "dog", "zebra"]
    assert np.allclose(means.values, expected, rtol=1e-6)


def test_to_xarray_dataset_qualifies_non_image_dims(stored):
    path, _ = stored
    with open_store(path) as store:
        dataset = store.to_xarray()
    assert dataset["features.0"].dims == ("image", "features.0:channel", "features.0:height", "features.0:width")
    assert dataset["classifier.4"].dims == ("image", "classifier.4:unit")


def test_open_zarr_activations_matches_to_xarray(extracted):
    with open_store(extracted) as store:
        ours = store.to_xarray()
    theirs = xr.open_zarr(extracted, group="activations", consolidated=False)
    for layer in ("features.0", "classifier.4"):
        assert theirs[layer].dims == ours[layer].dims
        assert np.array_equal(theirs[layer].values, ours[layer].values)


def test_open_zarr_root_reads_row_metadata_as_strings(extracted):
    root = xr.open_zarr(extracted, consolidated=False)
    with open_store(extracted) as store:
        assert root["file_names"].dims == ("image",)
        assert root["file_names"].values.tolist() == store.file_names.tolist()
        assert root["classes"].values.tolist() == ["cat", "dog", "zebra"]
        assert np.array_equal(root["targets"].values, store.targets)


def test_open_datatree_aligns_metadata_and_layers(extracted):
    tree = xr.open_datatree(extracted, engine="zarr", consolidated=False)
    assert tree["activations"].sizes["image"] == tree.sizes["image"] == 12


def test_reading_never_imports_torch(extracted):
    code = (f"import sys; from actstore import open_store\n"
            f"with open_store({str(extracted)!r}) as s: s.to_xarray().compute(); s.flat('features.0')[:, 5]\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_missing_xarray_names_the_extra(stored, monkeypatch):
    path, _ = stored
    monkeypatch.setitem(sys.modules, "xarray", None)
    with open_store(path) as store, pytest.raises(UserError, match=r"pip install 'actstore\[analysis\]'"):
        store.to_xarray("features.0")


REDUCTION = textwrap.dedent("""
    import sys
    import numpy as np
    import actstore.store.read.views as analysis
    from actstore import open_store
    analysis.DASK_CHUNK_BYTES = 4 * 2**20       # one store chunk per dask chunk
    with open_store(sys.argv[1]) as store:
        means = store.to_xarray("features.0").groupby("class_name").mean().compute()
    np.save(sys.argv[2], means.values)
""")


def run_with_peak_rss(args: list[str]) -> int:
    """Run a Python subprocess to its end; the peak RSS seen by polling it."""
    import psutil
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    assert proc.returncode == 0
    return peak


@pytest.mark.slow
def test_per_class_means_of_a_layer_larger_than_the_memory_cap(tmp_path):
    cap, n, shape, block = 320 * 2**20, 4096, (64, 32, 32), 512      # 1 GiB of float32: 3.2x the cap
    spec = LayerSpec("features.0", shape, shape, "float32", (16, 64, 32, 32))
    targets = np.arange(n) * 3 // n
    writer = create_writer(tmp_path / "big.zarr", "zarr", Layout(n, (spec,), 16, compression="lz4"),
                           [f"c{t}/{i}.png" for i, t in enumerate(targets)], targets, ["a", "b", "c"],
                           {"format": FORMAT_NAME, "status": "complete"})
    rng, sums = np.random.default_rng(0), np.zeros((3, *shape))
    for start in range(0, n, block):
        data = np.maximum(rng.random((block, *shape), dtype=np.float32) - 0.5, 0)
        writer.write_rows(start, {"features.0": data})
        for t in np.unique(targets[start:start + block]):
            sums[t] += data[targets[start:start + block] == t].sum(axis=0, dtype=np.float64)
    writer.close()
    assert n * spec.bytes_per_image >= 3 * cap
    peak = run_with_peak_rss(["-c", REDUCTION, str(tmp_path / "big.zarr"), str(tmp_path / "means.npy")])
    assert peak < cap
    assert np.allclose(np.load(tmp_path / "means.npy"), sums / np.bincount(targets)[:, None, None, None], rtol=1e-5)


def test_rechunk_unit_major_keeps_values_with_one_channel_chunks(stored, tmp_path):
    path, values = stored
    result = rechunk(path, tmp_path / "units.zarr", "unit-major")
    assert result.chunks == {"features.0": (40, 6, 5, 4), "classifier.4": (40, 10)}
    with open_store(path) as source, open_store(tmp_path / "units.zarr") as copy:
        assert copy.status == "complete"
        assert np.array_equal(copy.file_names, source.file_names)
        assert np.array_equal(copy.targets, source.targets)
        for layer in ("features.0", "classifier.4"):
            assert np.array_equal(copy[layer][:], values[layer])


def test_rechunk_unit_major_fits_channels_to_chunk_bytes(tmp_path):
    write_store(tmp_path / "s.zarr", "zarr", n=64, conv=(8, 32, 32), units=4096)
    result = rechunk(tmp_path / "s.zarr", tmp_path / "u.h5", "unit-major", chunk_images=64)
    assert result.chunks["features.0"] == (64, 4, 32, 32)       # 64 rows x 4 channels = 1 MiB
    assert result.chunks["classifier.4"] == (64, 4096)           # 64 rows x 4096 units = 1 MiB


def test_rechunk_copies_in_blocks_within_max_memory(stored, tmp_path):
    path, values = stored
    # 480 + 40 B per row; a budget of 16 rows (x2 for the compressed copy) gives blocks of 16 rows.
    result = rechunk(path, tmp_path / "small.h5", "image-major", chunk_images=8, max_memory=16 * 2 * 520)
    assert result.block_rows == 16
    with open_store(tmp_path / "small.h5") as copy:
        assert copy.spec("features.0").chunks == (8, 6, 5, 4)
        assert np.array_equal(copy["features.0"][:], values["features.0"])


def test_rechunk_refuses_an_incomplete_store(tmp_path):
    write_store(tmp_path / "half.zarr", "zarr", written=slice(0, 16))
    with pytest.raises(UserError, match="not complete"):
        rechunk(tmp_path / "half.zarr", tmp_path / "out.zarr")


def test_rechunk_refuses_to_overwrite_without_the_flag(stored, tmp_path):
    path, _ = stored
    rechunk(path, tmp_path / "out.zarr")
    with pytest.raises(UserError, match="--overwrite"):
        rechunk(path, tmp_path / "out.zarr")


def test_rechunk_command_prints_one_line(stored, tmp_path):
    from typer.testing import CliRunner

    from actstore.cli import app
    path, _ = stored
    result = CliRunner().invoke(app, ["rechunk", str(path), str(tmp_path / "cli.zarr"), "--chunk-images", "20"])
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1 and "unit-major" in result.output and "(20, 6, 5, 4)" in result.output
