"""A damaged store recomputed, and "complete" meaning one thing: a row
recorded as written whose shard is gone or whose chunk fails its checksum
raises naming layer, rows and file, `info` shows the store damaged, a rerun
(lost files) or --repair (corrupt chunks) recomputes exactly those rows bit
for bit; export and rechunk take a store with a skipped image (NaN rows, or
--drop-skipped)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import make_images
from test_trust import scramble_jpeg
from typer.testing import CliRunner

from actstore import extract, open_store
from actstore.cli import app
from actstore.errors import CorruptStoreError
from actstore.verify import verify

FAST = dict(num_workers=0, quiet=True, chunk_images=4, batch_size=4)
LAYERS = ["features.2", "classifier.4"]


def run(weights, images, out, **extra):
    return extract(model_name="alexnet", model_path=weights, in_path=images, out_path=out,
                   module_names=LAYERS, **{**FAST, **extra})


def arrays(path) -> dict[str, np.ndarray]:
    with open_store(path) as store:
        return {layer: store[layer][:] for layer in store.layers}


def flip_byte(path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_deleted_shard_and_a_corrupt_chunk_raise_show_and_are_recomputed_alone(tmp_path, image_dir,
                                                                                   weights_file):
    """A plain rerun recomputes the shard that is gone, --repair the chunk that
    fails its checksum; every array then equals the untouched store's bit for
    bit, and shards of other rows are never rewritten."""
    weights, out = weights_file("alexnet"), tmp_path / "s.zarr"
    run(weights, image_dir, out, zarr_shard_rows=4)
    untouched = arrays(out)
    shard = out / "activations" / "features.2" / "c" / "1" / "0" / "0" / "0"       # rows 4-7
    corrupt = out / "activations" / "classifier.4" / "c" / "2" / "0"                # rows 8-11
    kept = {p: p.stat().st_mtime_ns for p in out.glob("activations/*/c/0/**/*") if p.is_file()}
    shard.unlink()
    flip_byte(corrupt, 40)
    with open_store(out) as store:
        with pytest.raises(CorruptStoreError) as error:
            store["features.2"][5]
        with pytest.raises(CorruptStoreError, match="layer 'classifier.4' rows 8-11 are corrupt"):
            store["classifier.4"][:]
    assert str(error.value) == (f"layer 'features.2' rows 5 are recorded as written but their data is gone "
                                f"({shard} missing): run the extract command again to recompute them, "
                                "or restore the file")
    info = CliRunner().invoke(app, ["info", str(out)])
    assert f"{out}  [zarr]  status: damaged  rows: 12/12" in info.stdout
    assert "  damaged: features.2 rows 4-7 are written but their data is gone" in info.stdout
    with pytest.warns(UserWarning, match="4 written row.s. have lost or corrupt data; recomputing the 4 row"):
        assert run(weights, image_dir, out, zarr_shard_rows=4).rows_this_run == 4   # the lost shard only
    assert verify(out, quick=True).ok and not verify(out).ok   # the corrupt chunk is still there
    with pytest.warns(UserWarning, match="4 written row.s. have lost or corrupt data"):
        result = run(weights, image_dir, out, zarr_shard_rows=4, repair=True)
    assert (result.rows_this_run, result.complete) == (4, True)
    for layer, values in arrays(out).items():
        assert values.tobytes() == untouched[layer].tobytes(), layer
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert verify(out).ok


def test_a_corrupt_hdf5_chunk_is_recomputed_by_repair_bit_identically(tmp_path, image_dir, weights_file):
    weights, out = weights_file("alexnet"), tmp_path / "s.h5"
    run(weights, image_dir, out)
    untouched = arrays(out)
    with h5py.File(out) as file:
        flip_byte(out, file["activations/classifier.4"].id.get_chunk_info_by_coord((8, 0)).byte_offset + 40)
    with open_store(out) as store, pytest.raises(CorruptStoreError, match=f"layer 'classifier.4' rows 8-11 are "
                                                                          f"corrupt \\(file {out}: "):
        store["classifier.4"][:]
    with pytest.warns(UserWarning, match="4 written row.s. have lost or corrupt data"):
        assert run(weights, image_dir, out, repair=True).rows_this_run == 4
    for layer, values in arrays(out).items():
        assert values.tobytes() == untouched[layer].tobytes(), layer


@pytest.fixture(scope="module")
def skipped_store(tmp_path_factory, weights_file):
    """A complete Zarr store of 12 images whose row 6 (a scrambled JPEG) was skipped mid-run (read only)."""
    from actstore.images import ImageSet
    tmp_path = tmp_path_factory.mktemp("skipped")
    images = make_images(tmp_path / "in", "flat")
    names = ImageSet.scan(images).file_names
    row = next(r for r, name in enumerate(names) if r >= 5 and name.lower().endswith((".jpg", ".jpeg")))
    scramble_jpeg(images / names[row])
    out = tmp_path / "s.zarr"
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert run(weights_file("alexnet"), images, out, skip_bad_images=True).complete
    return out, row, names


def test_export_of_a_store_with_a_skipped_image_writes_nan_rows_or_drops_them(tmp_path, skipped_store):
    out, row, names = skipped_store
    with open_store(out) as store:
        kept = store["classifier.4"][np.flatnonzero(store.written)]
        targets = store.targets
    result = CliRunner().invoke(app, ["export", str(out), "--module-name", "classifier.4", "--file-format", "npy",
                                      "--out-path", str(tmp_path / "nan")])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith("; 1 skipped image(s) kept as NaN rows (see skipped_images; "
                                           "--drop-skipped leaves them out)")
    exported = np.load(tmp_path / "nan" / "alexnet" / "classifier.4" / "activations.npy")
    assert exported.shape == (12, 4096) and np.isnan(exported[row]).all()
    assert np.delete(exported, row, axis=0).tobytes() == kept.tobytes()
    dropped = CliRunner().invoke(app, ["export", str(out), "--module-name", "classifier.4", "--file-format", "npy",
                                       "--out-path", str(tmp_path / "drop"), "--drop-skipped"])
    assert dropped.stdout.rstrip().endswith("; 1 skipped image(s) dropped")
    folder = tmp_path / "drop" / "alexnet" / "classifier.4"
    assert np.load(folder / "activations.npy").tobytes() == kept.tobytes()
    assert (folder / "file_names.txt").read_text().splitlines() == [n for i, n in enumerate(names) if i != row]
    np.testing.assert_array_equal(np.load(folder / "targets.npy"), np.delete(targets, row))


@pytest.mark.parametrize("drop", [False, True])
def test_rechunk_of_a_store_with_a_skipped_image_keeps_or_drops_its_row(tmp_path, skipped_store, drop):
    from actstore.store.rechunk import rechunk
    out, row, names = skipped_store
    copy = tmp_path / "copy.h5"
    result = rechunk(out, copy, "unit-major", drop_skipped=drop)
    assert (result.rows, result.skipped, result.dropped_skipped) == (11 if drop else 12, 1, drop)
    with open_store(out) as original, open_store(copy) as store:
        assert store.complete and store.status == "complete"
        good = np.flatnonzero(original.written)
        (record,) = store.attrs["skipped_images"]
        assert record["file_name"] == names[row] and ("row" in record) != drop
        if drop:
            assert store.written.all() and list(store.file_names) == [n for i, n in enumerate(names) if i != row]
            assert store["classifier.4"][:].tobytes() == original["classifier.4"][good].tobytes()
        else:
            assert np.flatnonzero(store.skipped).tolist() == [row] and np.flatnonzero(~store.written).tolist() == [row]
            assert store["classifier.4"][good].tobytes() == original["classifier.4"][good].tobytes()
    assert verify(copy).ok
