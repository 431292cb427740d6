"""A store that can be trusted after months on a disk: every chunk carries a
checksum that reads check, rows whose data is gone or corrupt raise naming
layer, rows and file, a rerun recomputes exactly those, and "complete" means
one thing (written + recorded skips) for extract, verify, export and rechunk."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from actstore import extract, open_store
from actstore.cli import app
from actstore.errors import CorruptStoreError
from actstore.store import LayerSpec, Layout, create_writer
from actstore.store.integrity import fletcher32_numpy, with_fletcher32
from actstore.verify import verify

from conftest import make_images
from test_trust import scramble_jpeg

FAST = dict(num_workers=0, quiet=True, chunk_images=4, batch_size=4)
LAYERS = ["features.2", "classifier.4"]
ROWS, UNITS = 32, (8, 4, 4)


def small_store(path, file_format: str, compression: str, shard_rows: int = 0, seed: int = 0) -> np.ndarray:
    """A store of one (32, 8, 4, 4) layer of random values, written through the
    writer as extract writes (no model needed); returns the values."""
    spec = LayerSpec("conv", UNITS, UNITS, "float32", (4, *UNITS))
    layout = Layout(n_rows=ROWS, layers=(spec,), chunk_images=4, compression=compression, shard_rows=shard_rows)
    values = np.random.default_rng(seed).standard_normal((ROWS, *UNITS)).astype(np.float32)
    writer = create_writer(path, file_format, layout, [f"{i}.png" for i in range(ROWS)], [0] * ROWS, ["a"],
                           {"format": "actstore", "status": "complete", "fingerprint": {}})
    with writer:
        writer.write_rows(0, {"conv": values})
    return values


def chunk_ranges(path) -> list[tuple[str, int, int]]:
    """(file, first byte, stop) of every stored chunk (HDF5) or shard/chunk file (Zarr) of the layer."""
    if path.suffix == ".h5":
        with h5py.File(path, "r") as file:
            dset = file["activations/conv"]
            infos = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
            return [(str(path), info.byte_offset, info.byte_offset + info.size) for info in infos]
    files = sorted(p for p in (path / "activations" / "conv" / "c").rglob("*") if p.is_file())
    return [(str(p), 0, p.stat().st_size) for p in files]


def corruptions_caught(tmp_path, file_format: str, compression: str, tries: int, seed: int,
                       shard_rows: int = 0) -> int:
    """Flip one random byte of the stored chunk data ``tries`` times, each in a
    fresh copy; count the damaged copies whose reading raises
    CorruptStoreError (naming the layer) or whose verify fails."""
    suffix = ".h5" if file_format == "hdf5" else ".zarr"
    pristine = tmp_path / f"pristine{suffix}"
    values = small_store(pristine, file_format, compression, shard_rows)
    ranges = chunk_ranges(pristine)
    rng, caught = np.random.default_rng(seed), 0
    for attempt in range(tries):
        copy = tmp_path / f"copy{attempt}{suffix}"
        (shutil.copy if file_format == "hdf5" else shutil.copytree)(pristine, copy)
        name, lo, hi = ranges[rng.integers(len(ranges))]
        target = str(copy) + name[len(str(pristine)):]
        with open(target, "r+b") as handle:
            at = int(rng.integers(lo, hi))
            handle.seek(at)
            byte = handle.read(1)[0]
            handle.seek(at)
            handle.write(bytes([byte ^ int(rng.integers(1, 256))]))
        try:
            with open_store(copy) as store:
                read = store["conv"][:]
        except CorruptStoreError as error:
            caught += "layer 'conv' rows" in str(error)
            continue
        caught += not verify(copy).ok   # a byte that changes no value (a padding byte) counts only here
    return caught


@pytest.mark.parametrize("file_format, compression, shard_rows",
                         [("zarr", "zstd", 16), ("hdf5", "lz4", 0)])
def test_ten_random_byte_flips_in_chunk_data_are_all_caught(tmp_path, file_format, compression, shard_rows):
    assert corruptions_caught(tmp_path, file_format, compression, 10, seed=1, shard_rows=shard_rows) == 10


@pytest.mark.slow
def test_fifty_byte_flips_per_format_and_codec_are_all_caught(tmp_path):
    """The bar: 50 random single-byte corruptions per format and codec, all caught."""
    cases = [("zarr", "zstd", 16), ("hdf5", "gzip", 0), ("hdf5", "lz4", 0)]   # the defaults, and Fletcher-32
    for index, (file_format, compression, shard_rows) in enumerate(cases):
        folder = tmp_path / f"{file_format}-{compression}"
        folder.mkdir()
        caught = corruptions_caught(folder, file_format, compression, 50, seed=index, shard_rows=shard_rows)
        assert caught == 50, (file_format, compression, caught)


def test_zarr_chunks_are_the_bytes_zarr_python_writes_with_crc32c(tmp_path):
    """actstore's own encoder and zarr-python produce the same chunk files, the
    CRC-32C of the compressed bytes appended; zarr-python verifies them on read."""
    values = small_store(tmp_path / "a.zarr", "zarr", "zstd")
    ours = zarr.open_array(tmp_path / "a.zarr" / "activations" / "conv", mode="r")
    assert [type(c).__name__ for c in ours.metadata.codecs] == ["BytesCodec", "BloscCodec", "Crc32cCodec"]
    theirs = zarr.create_array(tmp_path / "b.zarr", shape=ours.shape, chunks=ours.chunks, dtype=ours.dtype,
                               fill_value=np.nan, compressors=ours.metadata.codecs[1:])
    theirs[:] = values
    for key in ("c/0/0/0/0", "c/7/0/0/0"):
        assert (tmp_path / "a.zarr" / "activations" / "conv" / key).read_bytes() == \
            (tmp_path / "b.zarr" / key).read_bytes()
    np.testing.assert_array_equal(ours[:], values)


def test_old_zarr_and_hdf5_stores_without_checksums_still_read_and_verify(tmp_path, monkeypatch):
    from actstore.store import hdf5 as hdf5_backend
    from actstore.store import zarr as zarr_backend
    monkeypatch.setattr(zarr_backend, "_compressors", lambda compression, level: (
        zarr_backend.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),))
    monkeypatch.setattr(hdf5_backend, "_filters", lambda compression, level: {"compression": "gzip",
                                                                             "shuffle": True})
    for suffix, fmt, shards in ((".zarr", "zarr", 16), (".h5", "hdf5", 0)):
        values = small_store(tmp_path / f"old{suffix}", fmt, "zstd", shards)
        with open_store(tmp_path / f"old{suffix}") as store:
            np.testing.assert_array_equal(store["conv"][:], values)
    with h5py.File(tmp_path / "old.h5") as file:
        assert not file["activations/conv"].fletcher32
    inner = zarr.open_array(tmp_path / "old.zarr" / "activations" / "conv").metadata.codecs[0].codecs
    assert [type(c).__name__ for c in inner] == ["BytesCodec", "BloscCodec"]


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_hdf5_direct_chunks_carry_hdf5s_own_fletcher32(tmp_path, compression):
    """The Fletcher-32 actstore appends is HDF5's: for uncompressed chunks the
    stored bytes equal h5py's own write through the filter; for Blosc, HDF5
    checks it on every read."""
    values = small_store(tmp_path / "a.h5", "hdf5", compression)
    with h5py.File(tmp_path / "a.h5") as file:
        dset = file["activations/conv"]
        assert dset.fletcher32 and dset[:].tobytes() == values.tobytes()
        ours = dset.id.read_direct_chunk((4, 0, 0, 0))[1]
    if compression == "none":
        with h5py.File(tmp_path / "b.h5", "w") as file:
            theirs = file.create_dataset("x", data=values, chunks=(4, *UNITS), fletcher32=True)
            assert theirs.id.read_direct_chunk((4, 0, 0, 0))[1] == ours == with_fletcher32(values[4:8].tobytes())


@pytest.mark.parametrize("data", [b"", b"\x01", b"\xff" * 3, bytes(range(256)) * 9, b"\x00" * 1000])
def test_fletcher32_in_numpy_equals_hdf5s(data):
    assert with_fletcher32(data)[-4:] == fletcher32_numpy(data).to_bytes(4, "little")


def test_a_corrupt_chunk_names_layer_rows_and_shard_on_read(tmp_path):
    small_store(tmp_path / "s.zarr", "zarr", "zstd", shard_rows=16)
    shard = tmp_path / "s.zarr" / "activations" / "conv" / "c" / "1" / "0" / "0" / "0"   # rows 16-31
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF   # inside the first inner chunk: rows 16-19
    shard.write_bytes(bytes(data))
    with open_store(tmp_path / "s.zarr") as store:
        np.testing.assert_array_equal(store["conv"][:16].shape, (16, *UNITS))   # other shards read
        with pytest.raises(CorruptStoreError) as error:
            store["conv"][14:20]
    assert str(error.value) == (f"layer 'conv' rows 16-19 are corrupt (shard {shard}: CRC-32C checksum "
                                "mismatch): rerun the extract command with --repair to recompute them, "
                                "or restore the file")


def test_verify_quick_checks_presence_without_decoding(tmp_path):
    small_store(tmp_path / "s.zarr", "zarr", "zstd", shard_rows=16)
    shard = tmp_path / "s.zarr" / "activations" / "conv" / "c" / "1" / "0" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    full, quick = verify(tmp_path / "s.zarr"), verify(tmp_path / "s.zarr", quick=True)
    assert [c.name for c in full.checks if not c.ok and c.name != "schema"] == ["chunks decode"]
    assert {c.name: c.ok for c in quick.checks}["chunks present"]
    assert [c.detail for c in quick.checks if c.name == "chunks decode"] == \
        ["skipped (--quick): checksums and values not read"]


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
