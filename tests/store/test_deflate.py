"""The gzip codec's deflate: ISA-L where its wheel is installed, Python's zlib
where not, and either way a stream that stock zlib (and so HDF5, numcodecs,
zarr) inflates to exactly the bytes that went in."""
from __future__ import annotations

import gzip
import importlib
import sys
import zlib

import google_crc32c
import h5py
import numcodecs
import numpy as np
import pytest
import zarr
from isal import isal_zlib

from actstore.store import LayerSpec, Layout, create_writer, deflate

N, SHAPE, CHUNKS = 20, (6, 5, 7), (8, 4, 5, 7)   # a ragged last row chunk and channel chunk


def _relu(seed: int = 0) -> np.ndarray:
    return np.maximum(np.random.default_rng(seed).standard_normal((N, *SHAPE)), 0).astype(np.float32)


def _store(path, file_format: str, data: np.ndarray, level: int | None = None) -> None:
    spec = LayerSpec("layer", SHAPE, SHAPE, "float32", CHUNKS)
    layout = Layout(n_rows=N, layers=(spec,), chunk_images=CHUNKS[0], compression="gzip",
                    compression_level=level)
    writer = create_writer(path, file_format, layout, [f"{i}.png" for i in range(N)], [0] * N, [], {})
    writer.write_rows(0, {"layer": data[:16]})
    writer.write_rows(16, {"layer": data[16:]})
    writer.close()


def _chunk(data: np.ndarray, row: int, channel: int) -> np.ndarray:
    """Chunk (row, channel, 0, 0) as stored: padded with zeros at the edges."""
    out = np.zeros(CHUNKS, np.float32)
    piece = data[row * 8:row * 8 + 8, channel * 4:channel * 4 + 4]
    out[:len(piece), :piece.shape[1]] = piece
    return out


@pytest.fixture
def zlib_only(monkeypatch):
    """The deflate module as it loads where the isal wheel is missing."""
    monkeypatch.setitem(sys.modules, "isal", None)
    importlib.reload(deflate)
    yield deflate
    monkeypatch.undo()
    importlib.reload(deflate)


def test_hdf5_gzip_chunks_are_isal_deflate_that_stock_zlib_inflates_bit_exactly(tmp_path):
    data = _relu()
    _store(tmp_path / "s.h5", "hdf5", data)
    with h5py.File(tmp_path / "s.h5", "r") as file:
        dset = file["activations/layer"]
        np.testing.assert_array_equal(dset[:], data)
        for row, channel in [(0, 0), (1, 1), (2, 1)]:   # inner, ragged channels, ragged rows
            _, stored = dset.id.read_direct_chunk((row * 8, channel * 4, 0, 0))
            shuffled = numcodecs.Shuffle(elementsize=4).encode(_chunk(data, row, channel))
            assert stored == isal_zlib.compress(shuffled, 1)
            assert zlib.decompress(stored) == shuffled.tobytes()


def test_zarr_gzip_chunks_are_isal_gzip_members_that_numcodecs_decodes_bit_exactly(tmp_path):
    data = _relu(1)
    _store(tmp_path / "s.zarr", "zarr", data, level=2)
    for row, channel in [(0, 0), (2, 1)]:
        stored = (tmp_path / "s.zarr" / "activations" / "layer" / "c" / f"{row}/{channel}/0/0").read_bytes()
        chunk = _chunk(data, row, channel)
        stored, checksum = stored[:-4], stored[-4:]   # the crc32c codec after gzip
        assert stored == isal_zlib.compress(chunk, 2, 31)
        assert checksum == google_crc32c.value(stored).to_bytes(4, "little")
        assert numcodecs.GZip().decode(stored) == chunk.tobytes() == gzip.decompress(stored)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s.zarr" / "activations" / "layer")[:], data)


def test_levels_isal_has_not_go_to_stock_zlib():
    payload = _relu().tobytes()
    assert deflate.IMPLEMENTATION == "isal"   # the wheel is a dependency
    for level in (0, 4, 9):
        assert deflate.zlib_stream(payload, level) == zlib.compress(payload, level)


def test_without_the_isal_wheel_stock_zlib_writes_the_same_format(zlib_only, tmp_path):
    payload = _relu().tobytes()
    assert deflate.IMPLEMENTATION == "zlib"
    assert deflate.zlib_stream(payload, 1) == zlib.compress(payload, 1)
    assert gzip.decompress(deflate.gzip_member(payload, 1)) == payload
    data = _relu(2)
    _store(tmp_path / "s.h5", "hdf5", data)
    with h5py.File(tmp_path / "s.h5", "r") as file:
        _, stored = file["activations/layer"].id.read_direct_chunk((0, 0, 0, 0))
        assert stored == zlib.compress(numcodecs.Shuffle(elementsize=4).encode(_chunk(data, 0, 0)), 1)
        np.testing.assert_array_equal(file["activations/layer"][:], data)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "uint8"])
def test_byte_shuffle_is_hdf5s_shuffle_filter(dtype):
    from actstore.store.codecs import byte_shuffle
    chunk = np.random.default_rng(1).standard_normal((3, 5, 7)).astype(dtype)
    expected = bytes(numcodecs.Shuffle(elementsize=chunk.dtype.itemsize).encode(chunk))
    assert byte_shuffle(chunk).tobytes() == expected
    assert byte_shuffle(chunk[:, ::2]).tobytes() == bytes(numcodecs.Shuffle(
        elementsize=chunk.dtype.itemsize).encode(np.ascontiguousarray(chunk[:, ::2])))
