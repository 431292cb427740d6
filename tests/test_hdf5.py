"""HDF5 chunks compressed in parallel and written directly read back exactly
through HDF5's own filters, with plain h5py."""
import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for plain h5py reads)
import numpy as np
import pytest

from actstore.store import create_writer
from actstore.store.base import LayerSpec, Layout


@pytest.mark.parametrize("compression", ["zstd", "lz4", "gzip", "none"])
def test_direct_chunk_writes_read_back_exactly_with_plain_h5py(tmp_path, compression):
    rng = np.random.default_rng(0)
    conv = np.maximum(rng.normal(size=(37, 8, 5, 3)), 0).astype("float32")   # 37 rows: a ragged last chunk
    lin = rng.normal(size=(37, 10)).astype("float16")
    layout = Layout(n_rows=37, chunk_images=16, compression=compression, layers=(
        LayerSpec("conv", (8, 5, 3), (8, 5, 3), "float32", (16, 3, 5, 3)),     # 8 channels in chunks of 3
        LayerSpec("lin", (10,), (10,), "float16", (16, 10))))
    path = tmp_path / "s.h5"
    writer = create_writer(path, "hdf5", layout, ["a"] * 37, [0] * 37, [], {"format": "actstore"})
    writer.write_rows(0, {"conv": conv[:32], "lin": lin[:32]})       # whole chunks: written directly
    writer.write_rows(32, {"conv": conv[32:35], "lin": lin[32:35]})  # ends inside a chunk: through h5py
    writer.write_rows(35, {"conv": conv[35:], "lin": lin[35:]})
    writer.close()
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["activations/conv"][:], conv)
        assert np.array_equal(f["activations/lin"][:], lin)
