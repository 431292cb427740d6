"""Chunks compressed on actstore's thread pool and written straight into a
Zarr store must be exactly what zarr would have written itself (HDF5's side:
test_hdf5.py)."""
from __future__ import annotations

import gzip

import google_crc32c
import numpy as np
import pytest
import zarr

from actstore.store import LayerSpec, Layout, create_writer
from actstore.store.codecs import ChunkCompressor

# 21 rows in chunks of 4 (a ragged last chunk) and 10 channels in chunks of 4
# (a ragged last channel chunk): every edge case of the chunk grid. Chunks of
# 80 KB hold several of Blosc's automatic blocks, so the block size matters.
N, SHAPE, CHUNKS = 21, (10, 32, 40), (4, 4, 32, 40)


def _data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.maximum(rng.standard_normal((N, *SHAPE)).astype(np.float32), 0)


def _write(path, file_format: str, compression: str, data: np.ndarray, blocks: list[int]) -> None:
    spec = LayerSpec("layer", SHAPE, SHAPE, str(data.dtype), CHUNKS)
    layout = Layout(n_rows=N, layers=(spec,), chunk_images=CHUNKS[0], compression=compression)
    writer = create_writer(path, file_format, layout, [f"{i}.png" for i in range(N)], [0] * N, [], {})
    for start, stop in zip(blocks[:-1], blocks[1:]):
        writer.write_rows(start, {"layer": data[start:stop]})
    writer.close()


def test_encode_block_covers_every_chunk_and_pads_the_edges():
    data = _data()
    pieces = ChunkCompressor().encode_block(data[8:], 8, CHUNKS, lambda chunk: chunk.tobytes())
    assert [index for index, _ in pieces] == [(r, c, 0, 0) for r in range(2, 6) for c in range(3)]
    last = np.frombuffer(dict(pieces)[(5, 2, 0, 0)], dtype=np.float32).reshape(CHUNKS)
    expected = np.zeros(CHUNKS, dtype=np.float32)
    expected[:1, :2] = data[20:, 8:]
    np.testing.assert_array_equal(last, expected)
    with pytest.raises(ValueError, match="inside a chunk"):
        ChunkCompressor().encode_block(data[6:], 6, CHUNKS, lambda chunk: chunk.tobytes())


def _inflated(payload: bytes) -> bytes:
    """A gzip member's content, its CRC-32C checked: ours comes from a faster
    deflate than zarr's own (actstore.store.deflate), so the streams differ
    while what they inflate to must not; other codecs' bytes as they are."""
    if payload[:2] != b"\x1f\x8b":
        return payload
    assert google_crc32c.value(payload[:-4]).to_bytes(4, "little") == payload[-4:]   # the crc32c codec
    return gzip.decompress(payload[:-4])


def test_blocks_of_several_layers_are_encoded_together_each_in_its_order():
    data = np.arange(20 * 6 * 5 * 7, dtype=np.float32).reshape(20, 6, 5, 7)
    flat = np.arange(20 * 3, dtype=np.float32).reshape(20, 3)
    compressor = ChunkCompressor()
    compressor.threads = 2
    got = list(compressor.iter_blocks([("conv", data[8:], 8, CHUNKS, lambda c: c.tobytes(), None),
                                       ("flat", flat[8:16], 8, (8, 3), lambda c: c.tobytes(), None)]))
    conv = ChunkCompressor().encode_block(data[8:], 8, CHUNKS, lambda chunk: chunk.tobytes())
    assert [(key, index) for key, index, _ in got] == [("conv", index) for index, _ in conv] + [("flat", (1, 0))]
    assert [payload for _, _, payload in got[:-1]] == [payload for _, payload in conv]
    assert got[-1][2] == flat[8:16].tobytes()
    stored = []
    assert all(payload is None for _, _, payload in compressor.iter_blocks(
        [("flat", flat[:8], 0, (8, 3), lambda c: c.tobytes(), lambda index, payload: stored.append(index))]))
    assert stored == [(0, 0)]
    compressor.close()


@pytest.mark.parametrize("dtype", ["float32", "float16"])   # Blosc's typesize follows the dtype
@pytest.mark.parametrize("compression", ["zstd", "lz4", "gzip", "none"])
def test_zarr_chunks_are_byte_identical_to_zarrs_own(tmp_path, compression, dtype):
    data = _data().astype(dtype)
    ours = tmp_path / "ours.zarr"
    _write(ours, "zarr", compression, data, [0, 8, 16, 21])
    # The same array written by zarr itself, with the codecs our store recorded.
    theirs_arr = zarr.open_array(ours / "activations" / "layer", mode="r")
    own = zarr.create_array(tmp_path / "theirs.zarr", shape=theirs_arr.shape, chunks=theirs_arr.chunks,
                            dtype=theirs_arr.dtype, fill_value=0, compressors=theirs_arr.compressors,
                            config={"write_empty_chunks": True})
    own[:] = data
    np.testing.assert_array_equal(theirs_arr[:], data)
    files = sorted(p.relative_to(ours / "activations" / "layer")
                   for p in (ours / "activations" / "layer" / "c").rglob("*") if p.is_file())
    assert len(files) == 6 * 3
    for name in files:
        assert _inflated((ours / "activations" / "layer" / name).read_bytes()) == \
            _inflated((tmp_path / "theirs.zarr" / name).read_bytes()), name
    assert not list(ours.rglob("*.partial"))
    # The written marks went the same way.
    np.testing.assert_array_equal(zarr.open_array(ours / "written", mode="r")[:], np.ones(N, np.uint8))


def test_unaligned_blocks_go_through_the_library_and_agree(tmp_path):
    data = _data(2)
    _write(tmp_path / "a.zarr", "zarr", "zstd", data, [0, 3, 8, 13, 16, 21])
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr" / "activations" / "layer")[:], data)
