"""HDF5 chunks compressed in parallel and written directly read back exactly
through HDF5's own filters, with plain h5py."""
import subprocess
import sys

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for plain h5py reads)
import numpy as np
import pytest

from actstore.errors import UserError
from actstore.store import create_writer, reopen_writer
from actstore.store.backends import hdf5_files
from actstore.store.layout import LayerSpec, Layout


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


def _hold_open(path, seconds: float) -> subprocess.Popen:
    """Another process with the file open for reading, as an analysis session would."""
    proc = subprocess.Popen([sys.executable, "-c", f"import h5py, sys, time; f = h5py.File(sys.argv[1], 'r'); "
                             f"print('open', flush=True); time.sleep({seconds})", str(path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"
    return proc


def test_a_writer_waits_for_a_passing_reader_and_names_a_lingering_one(tmp_path, monkeypatch):
    layout = Layout(n_rows=4, chunk_images=4, layers=(LayerSpec("lin", (3,), (3,), "float32", (4, 3)),))
    path = tmp_path / "s.h5"
    create_writer(path, "hdf5", layout, ["a"] * 4, [0] * 4, [], {"format": "actstore"}).close()
    monkeypatch.setattr(hdf5_files, "LOCK_WAIT_SECONDS", 0.5)
    reader = _hold_open(path, 60)
    try:
        with pytest.raises(UserError, match=r"s.h5 is open in another process .*close it there and run again"):
            reopen_writer(path)
    finally:
        reader.kill()
        reader.wait()
    monkeypatch.setattr(hdf5_files, "LOCK_WAIT_SECONDS", 30)
    reader = _hold_open(path, 1.0)        # closes after a second: the writer gets in then
    writer = reopen_writer(path)
    writer.write_rows(0, {"lin": np.ones((4, 3), np.float32)})
    writer.close()
    reader.wait()
    with h5py.File(path, "r") as f:
        assert f["written"][:].tolist() == [1, 1, 1, 1]
