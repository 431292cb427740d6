"""Chunk checksums: every chunk of a new store carries one that actstore's
reader and the format's own readers check; a flipped byte, a lost shard or
chunk raise CorruptStoreError naming layer, rows and file; verify --quick
checks presence only. Stores come from the writer, no model needed."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import zarr

from actstore import open_store
from actstore.errors import CorruptStoreError
from actstore.store import LayerSpec, Layout, create_writer
from actstore.store.integrity import fletcher32_numpy, with_fletcher32
from actstore.verify import verify

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
    small_store(pristine, file_format, compression, shard_rows)
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
                store["conv"][:]
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
    from actstore.store.codecs import CodecSpec
    from actstore.store.layout import Layout as StoreLayout
    monkeypatch.setattr(StoreLayout, "codec", property(
        lambda self: CodecSpec(self.compression, self.compression_level, checksum=False)))   # as before checksums
    for suffix, fmt, shards in ((".zarr", "zarr", 16), (".h5", "hdf5", 0)):
        values = small_store(tmp_path / f"old{suffix}", fmt, "zstd", shards)
        with open_store(tmp_path / f"old{suffix}") as store:
            np.testing.assert_array_equal(store["conv"][:], values)
        assert verify(tmp_path / f"old{suffix}").checks[-2].ok   # chunks decode
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
