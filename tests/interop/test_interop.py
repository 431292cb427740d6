"""Stores read by readers that are not actstore: plain h5py and zarr, h5py on
HDF5 1.14, h5dump 1.10, ncdump, xarray through both engines, tensorstore. Each
reads the very values actstore reads, names every dimension, and sees NaN
(never 0) where no row was written."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from conftest import reference_activations

from actstore import extract, open_store
from actstore.errors import RowsNotWrittenError
from actstore.store import create_writer, reopen_writer, repair_store
from actstore.store.layout import LayerSpec, Layout
from actstore.store.metadata.attributes import decode, encode
from actstore.store.rechunk import rechunk

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["features.2", "classifier.6"]
OLD_H5PY = Path(os.environ.get("ACTSTORE_OLD_H5PY", "/tmp/h5py311"))


@pytest.fixture(scope="module")
def stores(tmp_path_factory, image_dir, weights_file) -> dict[str, Path]:
    """AlexNet at two layers for 12 images: the default HDF5 and Zarr stores, and
    HDF5 stores with gzip, none and Blosc zstd asked for."""
    folder = tmp_path_factory.mktemp("interop")
    out = {}
    for name, compression in [("default.h5", None), ("gzip.h5", "gzip"), ("none.h5", "none"),
                              ("zstd.h5", "zstd"), ("default.zarr", None)]:
        out[name] = folder / name
        extract(model_name="alexnet", model_path=weights_file("alexnet"), in_path=image_dir,
                out_path=out[name], module_names=LAYERS, batch_size=5, chunk_images=4, num_workers=0,
                compression=compression, quiet=True)
    return out


def stored(path: Path) -> dict[str, np.ndarray]:
    with open_store(path) as store:
        return {"file_names": np.asarray(store.file_names), "targets": np.asarray(store.targets),
                **{layer: store[layer][:] for layer in store.layers}}


def interrupted(path: Path) -> np.ndarray:
    """A store stopped after 8 of 20 rows: 8 rows of known values written."""
    rng = np.random.default_rng(3)
    data = np.maximum(rng.normal(size=(20, 6, 2, 2)), 0).astype("float32")
    layout = Layout(n_rows=20, chunk_images=4, layers=(LayerSpec("conv", (6, 2, 2), (6, 2, 2), "float32",
                                                                 (4, 6, 2, 2)),))
    writer = create_writer(path, "hdf5" if path.suffix == ".h5" else "zarr", layout,
                           [f"img{i}.png" for i in range(20)], [i % 3 for i in range(20)], ["a", "b", "c"],
                           {"format": "actstore", "status": "incomplete"})
    writer.write_rows(0, {"conv": data[:8]})
    writer.close()
    return data


def test_default_hdf5_store_is_shuffle_gzip_level_1_in_the_hdf5_1_10_file_format(stores, image_dir, weights_file):
    with h5py.File(stores["default.h5"], "r") as f:
        dset = f["activations/features.2"]
        assert dict(dset._filters).keys() == {"shuffle", "gzip"} and dset.compression_opts == 1
        assert np.isnan(dset.fillvalue)
    assert stores["default.h5"].read_bytes()[8] == 3     # superblock version 3: HDF5 1.10's
    with open_store(stores["default.h5"]) as store:
        assert store.attrs["compression"] == "gzip" and store.attrs["compression_level"] == 1
        assert store.attrs["fingerprint"]["compression"] == "gzip"
        expected = reference_activations("alexnet", weights_file("alexnet"), image_dir, store.file_names,
                                         "classifier.6")
        # batched against one image at a time: equal up to float summation order
        np.testing.assert_allclose(store["classifier.6"][:], expected, rtol=1e-5, atol=1e-5)
    with open_store(stores["default.zarr"]) as store:
        assert store.attrs["compression"] == "zstd" and store.attrs["compression_level"] == 1


def test_every_store_holds_the_same_numbers_whatever_its_codec(stores):
    default = stored(stores["default.zarr"])
    for name in ("default.h5", "gzip.h5", "none.h5", "zstd.h5"):
        for key, values in stored(stores[name]).items():
            assert np.array_equal(values, default[key]), (name, key)


@pytest.mark.skipif(not shutil.which("h5dump"), reason="h5dump is not installed")
def test_h5dump_dumps_the_activations_bit_for_bit_and_every_attribute(stores, tmp_path):
    path = stores["default.h5"]
    for layer in LAYERS:
        out = tmp_path / f"{layer}.bin"
        subprocess.run(["h5dump", "-d", f"/activations/{layer}", "-b", "LE", "-o", str(out), str(path)],
                       check=True, capture_output=True)
        with open_store(path) as store:
            assert out.read_bytes() == store[layer][:].tobytes()
    dump = subprocess.run(["h5dump", "-A", str(path)], check=True, capture_output=True, text=True).stdout
    with h5py.File(path, "r") as f:
        names = list(f.attrs) + [k for layer in LAYERS for k in f["activations"][layer].attrs]
    assert names and all(f'ATTRIBUTE "{name}"' in dump for name in names)


@pytest.mark.skipif(not shutil.which("h5dump"), reason="h5dump is not installed")
def test_h5dump_reads_a_blosc_store_with_the_plugin_path_that_info_gives(stores, tmp_path):
    import hdf5plugin
    path, out = stores["zstd.h5"], tmp_path / "conv.bin"
    with open_store(path) as store:
        assert any("HDF5_PLUGIN_PATH" in note for note in store.summary()["notes"])
        expected = store["features.2"][:].tobytes()
    subprocess.run(["h5dump", "-d", "/activations/features.2", "-b", "LE", "-o", str(out), str(path)],
                   check=True, capture_output=True, env={**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH})
    assert out.read_bytes() == expected
    with open_store(stores["default.h5"]) as store:
        assert store.summary()["notes"] == []


@pytest.mark.skipif(not shutil.which("ncdump"), reason="ncdump is not installed")
def test_ncdump_names_every_dimension(stores):
    header = subprocess.run(["ncdump", "-h", str(stores["default.h5"])], check=True, capture_output=True,
                            text=True).stdout
    assert "image = 12 ;" in header and "class = 3 ;" in header
    assert "string file_names(image) ;" in header and "int64 targets(image) ;" in header
    assert r"float features.2(image, features.2\:channel, features.2\:height, features.2\:width) ;" in header
    assert r"float classifier.6(image, classifier.6\:unit) ;" in header
    assert "phony" not in header


@pytest.mark.skipif(not (OLD_H5PY / "bin" / "python").exists(),
                    reason=f"no h5py 3.11 environment at {OLD_H5PY}: run benchmarks/check_old_readers.sh once")
def test_h5py_on_hdf5_1_14_reads_default_gzip_and_uncompressed_stores_bit_identically(stores):
    paths = [stores[name] for name in ("default.h5", "gzip.h5", "none.h5")]
    lines = subprocess.run([str(ROOT / "benchmarks" / "check_old_readers.sh"), *map(str, paths)], check=True,
                           capture_output=True, text=True, env={**os.environ, "ACTSTORE_OLD_H5PY": str(OLD_H5PY)}
                           ).stdout.splitlines()
    assert lines[0].startswith("hdf5 1.14")
    seen = {(Path(line.split()[0]), line.split()[1]): line.split()[4:] for line in lines[1:]}
    dims = {"file_names": "image", "targets": "image", "features.2": "image,features.2:channel,"
            "features.2:height,features.2:width", "classifier.6": "image,classifier.6:unit"}
    for path in paths:
        for key, values in stored(path).items():
            name = key if key in ("file_names", "targets") else f"activations/{key}"
            digest = hashlib.sha256("\n".join(values).encode() if key == "file_names"
                                    else np.ascontiguousarray(values).tobytes()).hexdigest()
            assert seen[(path, name)] == [dims[key], digest], (path, name)


def test_xarray_h5netcdf_engine_sees_named_dimensions_and_the_stored_values(stores):
    xr = pytest.importorskip("xarray")
    values = stored(stores["default.h5"])
    root = xr.open_dataset(stores["default.h5"], engine="h5netcdf")
    acts = xr.open_dataset(stores["default.h5"], engine="h5netcdf", group="activations")
    assert root["file_names"].dims == ("image",) and root["classes"].dims == ("class",)
    assert root["file_names"].values.tolist() == values["file_names"].tolist()
    assert acts["features.2"].dims == ("image", "features.2:channel", "features.2:height", "features.2:width")
    assert acts.sizes["image"] == root.sizes["image"] == 12
    assert np.array_equal(acts["features.2"].values, values["features.2"])
    assert root.attrs["flatten_acts"] == 0 and json.loads(root.attrs["fingerprint"])["compression"] == "gzip"


def test_open_zarr_warns_nothing_and_to_netcdf_round_trips(stores, tmp_path):
    xr = pytest.importorskip("xarray")
    values = stored(stores["default.zarr"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        root = xr.open_zarr(stores["default.zarr"])
        acts = xr.open_zarr(stores["default.zarr"], group="activations")
    assert zarr.open_consolidated(str(stores["default.zarr"]))["activations/features.2"].shape == (12, 64, 27, 27)
    for name, dataset in (("root", root), ("acts", acts)):
        dataset.load().to_netcdf(tmp_path / f"{name}.nc", engine="h5netcdf")
        back = xr.open_dataset(tmp_path / f"{name}.nc", engine="h5netcdf")
        assert back.attrs == dataset.attrs
        for variable in dataset.data_vars:
            assert np.array_equal(back[variable].values, dataset[variable].values)
    assert np.array_equal(back["features.2"].values, values["features.2"])


@pytest.mark.parametrize("name", ["default.h5", "default.zarr"])
def test_to_xarray_writes_to_netcdf_and_reads_back_exactly(stores, tmp_path, name):
    xr = pytest.importorskip("xarray")
    with open_store(stores[name]) as store:
        store.to_xarray("features.2").to_netcdf(tmp_path / "one.nc")
        store.to_xarray(LAYERS).to_netcdf(tmp_path / "both.nc")
        expected = {layer: store[layer][:] for layer in LAYERS}
    one = xr.open_dataarray(tmp_path / "one.nc")
    both = xr.open_dataset(tmp_path / "both.nc")
    assert one.dims == ("image", "channel", "height", "width")
    assert np.array_equal(one.values, expected["features.2"])
    assert np.array_equal(both["classifier.6"].values, expected["classifier.6"])


def test_stored_attributes_hold_no_null_bool_or_dict_and_the_api_gives_them_back(stores):
    raw = json.loads((stores["default.zarr"] / "zarr.json").read_text())["attributes"]
    with h5py.File(stores["default.h5"], "r") as f:
        raw_h5 = dict(f.attrs)
    for attrs in (raw, raw_h5):
        assert not any(v is None or isinstance(v, (bool, np.bool_, dict)) for v in attrs.values())
        assert "amp" not in attrs and attrs["flatten_acts"] == 0 and isinstance(attrs["fingerprint"], str)
    for path in (stores["default.zarr"], stores["default.h5"]):
        with open_store(path) as store:
            assert store.attrs["amp"] is None and store.attrs["flatten_acts"] is False
            assert store.attrs["fingerprint"]["channels_last"] is False
            assert store.layer_attrs("features.2")["flattened"] is False
            assert store.layer_attrs("features.2")["dims"] == ["image", "channel", "height", "width"]


def test_attributes_encode_and_decode_exactly():
    attrs = {"a": None, "b": True, "c": {"x": [1, None]}, "d": [], "e": ["s", "t"], "f": [1, 2.5],
             "g": [{"k": 1}], "h": "text", "i": 3, "j": False}
    values, removed = encode(attrs)
    assert removed == ["a"]
    assert values == {"b": 1, "c": '{"x": [1, null]}', "d": "[]", "e": ["s", "t"], "f": [1, 2.5],
                      "g": '[{"k": 1}]', "h": "text", "i": 3, "j": 0,
                      "_json_keys": '["c", "d", "g"]', "_bool_keys": '["b", "j"]'}
    assert decode(values, ("a",)) == attrs
    again, removed = encode({"b": "now text", "c": None}, values)   # an update: markers follow
    assert removed == ["c"] and again["_json_keys"] == '["d", "g"]' and again["_bool_keys"] == '["j"]'


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_unwritten_rows_read_nan_with_plain_h5py_and_zarr_and_actstore_refuses_them(tmp_path, suffix):
    path = tmp_path / f"stopped{suffix}"
    data = interrupted(path)
    if suffix == ".h5":
        with h5py.File(path, "r", swmr=True) as f:
            conv, targets, written = f["activations/conv"][:], f["targets"][:], f["written"][:]
    else:
        group = zarr.open_group(str(path), mode="r")
        conv, targets, written = group["activations/conv"][:], group["targets"][:], group["written"][:]
    assert np.array_equal(conv[:8], data[:8]) and np.isnan(conv[8:]).all()
    assert targets.tolist() == [i % 3 for i in range(20)] and written.tolist() == [1] * 8 + [0] * 12
    with open_store(path) as store:
        assert np.array_equal(store["conv"][:8], data[:8])
        with pytest.raises(RowsNotWrittenError, match="12 selected rows"):
            store["conv"][:]


def test_a_zarr_store_is_consolidated_once_complete_again_after_resume_and_rechunk(tmp_path):
    path = tmp_path / "s.zarr"
    data = interrupted(path)
    with pytest.raises(Exception):
        zarr.open_consolidated(str(path))          # incomplete: nothing consolidated yet
    writer = reopen_writer(path)
    writer.write_rows(8, {"conv": data[8:]})
    writer.update_attrs({"status": "complete"})
    writer.close()
    assert np.array_equal(zarr.open_consolidated(str(path))["activations/conv"][:], data)
    rechunk(path, tmp_path / "r.zarr", layout="unit-major")
    group = zarr.open_consolidated(str(tmp_path / "r.zarr"))
    assert np.array_equal(group["activations/conv"][:], data) and group.attrs["status"] == "complete"


def test_tensorstore_reads_the_numeric_arrays_and_the_utf8_file_names_bit_identically(stores):
    ts = pytest.importorskip("tensorstore")
    values = stored(stores["default.zarr"])

    def read(name: str) -> np.ndarray:
        return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(stores["default.zarr"] / name)}},
                       read=True).result().read().result()

    for layer in LAYERS:
        assert np.array_equal(read(f"activations/{layer}"), values[layer])
    assert np.array_equal(read("targets"), values["targets"])
    names = [bytes(row).rstrip(b"\0").decode() for row in read("file_names_utf8")]
    assert names == values["file_names"].tolist()
    assert [bytes(row).rstrip(b"\0").decode() for row in read("classes_utf8")] == ["cat", "dog", "zebra"]


def test_a_killed_hdf5_writer_leaves_a_file_actstore_reads_and_repair_opens_to_every_reader(stores, tmp_path):
    path = tmp_path / "killed.h5"
    shutil.copy(stores["gzip.h5"], path)
    subprocess.run([sys.executable, "-c", "import os, sys; from actstore.store import reopen_writer; "
                    "w = reopen_writer(sys.argv[1]); os.kill(os.getpid(), 9)", str(path)])
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")
    with open_store(path) as store:                 # read-only, as it is
        assert store.complete and any("verify --repair" in note for note in store.summary()["notes"])
    info = subprocess.run([sys.executable, "-m", "actstore", "info", str(path)], capture_output=True, text=True)
    assert info.returncode == 0 and "actstore verify --repair" in info.stdout
    before = stored(path)
    cli = subprocess.run([sys.executable, "-m", "actstore", "verify", "--repair", str(path)],
                         capture_output=True, text=True)
    assert cli.returncode == 0 and "cleared the 'open for write' flag" in cli.stdout
    with h5py.File(path, "r") as f:                # every reader opens it now
        assert f["written"][:].all()
    after = stored(path)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert repair_store(path) == []


def test_a_rerun_without_compression_resumes_a_store_of_another_codec(stores, image_dir, weights_file):
    """HDF5 stores made when Blosc zstd was HDF5's default resume as they are."""
    result = extract(model_name="alexnet", model_path=weights_file("alexnet"), in_path=image_dir,
                     out_path=stores["zstd.h5"], module_names=LAYERS, batch_size=5, chunk_images=4,
                     num_workers=0, quiet=True)
    assert result.resumed and result.rows_this_run == 0 and result.rows_written == 12
    with open_store(stores["zstd.h5"]) as store:
        assert store.attrs["compression"] == "zstd"
