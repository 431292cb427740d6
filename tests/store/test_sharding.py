"""Zarr v3 shards: many inner chunks per file, written whole by actstore, read
back bit for bit by actstore, zarr-python and tensorstore."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from conftest import reference_activations
from typer.testing import CliRunner

from actstore import UserError, open_store
from actstore.cli import app
from actstore.errors import BadOptionError
from actstore.store import FORMAT_NAME, LayerSpec, Layout, choose_shard_rows, create_writer, reopen_writer
from actstore.store.backends.zarr_shards import MISSING, read_index
from actstore.store.rechunk import rechunk

ts = pytest.importorskip("tensorstore")
try:
    import zarrita  # an early Zarr v3 implementation, written apart from zarr-python
except ImportError:
    zarrita = None

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["features.2", "classifier.6"]
SPECS = (LayerSpec("classifier.4", (12,), (12,), "float32", (4, 12)),
         LayerSpec("features.0", (6, 3, 3), (6, 3, 3), "float32", (4, 2, 3, 3)))


def synthetic(n: int = 45, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.module_name: np.maximum(rng.standard_normal((n, *s.shape)), 0).astype("float32") for s in SPECS}


def write(path: Path, values: dict[str, np.ndarray], blocks, shard_rows: int = 8, chunk_images: int = 4) -> None:
    n = len(next(iter(values.values())))
    writer = create_writer(path, "zarr", Layout(n_rows=n, layers=SPECS, chunk_images=chunk_images,
                                                shard_rows=shard_rows),
                           [f"{i}.png" for i in range(n)], [0] * n, ["a"], {"format": FORMAT_NAME})
    for start, stop in blocks:
        writer.write_rows(start, {k: v[start:stop] for k, v in values.items()})
    writer.close()


def read_everywhere(path: Path, layer: str, written_only: bool = True) -> list[np.ndarray]:
    """The layer as actstore, zarr-python, tensorstore and (where installed)
    zarrita read it; ``written_only=False``: every row, as stored (actstore's
    reader refuses unwritten rows)."""
    if written_only:
        with open_store(path) as store:
            found = [store[layer][:]]
    else:
        found = []
    found.append(zarr.open_array(str(path / "activations" / layer), mode="r")[:])
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "activations" / layer)}}
    found.append(ts.open(spec).result().read().result())
    if zarrita is not None:
        found.append(zarrita.Array.open(zarrita.LocalStore(str(path)) / "activations" / layer)[:])
    return found


def test_every_layer_gets_the_same_shard_rows_whatever_its_width():
    fc = LayerSpec("fc", (512,), (512,), "float32", (16, 512))
    wide = LayerSpec("layer1", (256, 56, 56), (256, 56, 56), "float32", (16, 4, 56, 56))   # 3.2 MB per image
    huge = LayerSpec("huge", (1024, 256, 256), (1024, 256, 256), "float32", (16, 1, 256, 256))
    assert choose_shard_rows("zarr", [fc], 1_281_167, 16) == 4096
    assert choose_shard_rows("zarr", [fc, wide], 1_281_167, 16) == 4096   # streamed: no memory bound
    assert choose_shard_rows("zarr", [huge], 1_281_167, 16) == 4096
    assert choose_shard_rows("zarr", [fc], 1_281_167, 48) == 4080          # whole chunks
    assert choose_shard_rows("zarr", [fc], 42, 4) == 44                    # no larger than the store
    assert choose_shard_rows("zarr", [fc], 1000, 16, requested=0) == 0
    assert choose_shard_rows("zarr", [fc], 1000, 16, requested=64) == 64
    with pytest.raises(BadOptionError, match=r"--zarr-shard-rows must be 0 \(unsharded\) or a multiple of "
                                             r"--chunk-images \(16\), got 24"):
        choose_shard_rows("zarr", [fc], 1000, 16, requested=24)


def test_a_sharded_store_reads_the_same_through_actstore_zarr_and_tensorstore(tmp_path):
    values = synthetic()
    # whole shards, several shards at once, an interrupted run's partial shard, its resume mid-shard
    blocks = [(0, 8), (8, 32), (32, 35), (35, 45)]
    write(tmp_path / "sharded.zarr", values, blocks)
    write(tmp_path / "chunked.zarr", values, blocks, shard_rows=0)
    for path in (tmp_path / "sharded.zarr", tmp_path / "chunked.zarr"):
        for layer, expected in values.items():
            for found in read_everywhere(path, layer):
                assert np.array_equal(found, expected)
    sharded = sorted(p.name for p in (tmp_path / "sharded.zarr/activations/features.0/c").iterdir())
    assert sharded == ["0", "1", "2", "3", "4", "5"]             # 6 shards of 8 rows
    chunked = list((tmp_path / "chunked.zarr/activations/features.0/c").rglob("*"))
    assert len([p for p in chunked if p.is_file()]) == 12 * 3    # 12 chunk rows x 3 channel chunks
    with open_store(tmp_path / "sharded.zarr") as store:
        assert store.written.all()
        summary = store.summary()["layers"]["features.0"]
        assert summary["shards"] == [8, 6, 3, 3] and summary["files"] == 6
        assert store["features.0"][[44, 3, 17], 1:5:2].tolist() == values["features.0"][[44, 3, 17], 1:5:2].tolist()


def test_a_shard_is_laid_out_as_the_zarr_v3_sharding_spec_says(tmp_path):
    values = synthetic()
    write(tmp_path / "s.zarr", values, [(0, 16), (16, 20)])   # shard 2 holds only its first chunk row
    meta = json.loads((tmp_path / "s.zarr/activations/features.0/zarr.json").read_text())
    codec = meta["codecs"][0]
    assert codec["name"] == "sharding_indexed" and meta["chunk_grid"]["configuration"]["chunk_shape"] == [8, 6, 3, 3]
    assert codec["configuration"]["chunk_shape"] == [4, 2, 3, 3]
    assert codec["configuration"]["index_codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}},
                                                      {"name": "crc32c"}]
    assert codec["configuration"]["index_location"] == "end"
    blosc = numcodecs.get_codec({"id": "blosc", **{k: v for k, v in codec["configuration"]["codecs"][1]
                                                   ["configuration"].items() if k in ("cname", "clevel")}})
    whole = (tmp_path / "s.zarr/activations/features.0/c/1/0/0/0").read_bytes()
    index = read_index(whole, (2, 3, 1, 1))
    assert index[..., 0].ravel().tolist()[0] == 0                                    # chunks first, in C order
    assert np.array_equal(index[..., 0].ravel()[1:], np.cumsum(index[..., 1].ravel())[:-1])
    assert len(whole) == int(index[..., 1].sum()) + 6 * 16 + 4                       # then the index and its CRC32C
    for row in range(2):
        for part in range(3):
            offset, size = index[row, part, 0, 0]
            chunk = np.frombuffer(blosc.decode(whole[offset:offset + size]), dtype="<f4").reshape(4, 2, 3, 3)
            assert np.array_equal(chunk, values["features.0"][8 + 4 * row:12 + 4 * row, 2 * part:2 * part + 2])
    partial = read_index((tmp_path / "s.zarr/activations/features.0/c/2/0/0/0").read_bytes(), (2, 3, 1, 1))
    assert (partial[0] != MISSING).all() and (partial[1] == MISSING).all()           # rows 20-23 not stored
    corrupt = bytearray(whole)
    corrupt[-5] ^= 1
    with pytest.raises(ValueError, match="shard index checksum mismatch"):
        read_index(bytes(corrupt), (2, 3, 1, 1))


def open_writer(path: Path, n: int, shard_rows: int = 8, chunk_images: int = 4):
    return create_writer(path, "zarr", Layout(n_rows=n, layers=SPECS, chunk_images=chunk_images,
                                              shard_rows=shard_rows),
                         [f"{i}.png" for i in range(n)], [0] * n, ["a"], {"format": FORMAT_NAME})


def rows_of(values: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: v[start:stop] for k, v in values.items()}


def test_a_shard_is_streamed_and_its_rows_marked_only_once_it_is_in_place(tmp_path):
    values, path = synthetic(), tmp_path / "s.zarr"
    shards = path / "activations/features.0/c"
    writer = open_writer(path, 45)
    assert writer.stream_rows == 4 and writer.block_rows == 8      # fed chunk rows, shards of 8 rows
    writer.write_rows(0, rows_of(values, 0, 4))
    assert not (shards / "0/0/0/0").exists() and len(list(shards.glob("0/0/0/0.*.partial"))) == 1
    assert not writer.written().any()
    writer.write_rows(4, rows_of(values, 4, 10))                  # ends shard 0, half a chunk row of shard 1
    assert (shards / "0/0/0/0").exists() and not list(shards.glob("0/0/0/0.*.partial"))
    assert writer.written().tolist() == [True] * 8 + [False] * 37
    writer.write_rows(11, rows_of(values, 11, 12))   # row 10 and rows 12-15 never come (unreadable images)
    writer.write_rows(16, rows_of(values, 16, 18))   # shard 1 is done; then stopped mid-chunk (Ctrl-C)
    writer.close()                                   # keeps the rows it was given
    expected = np.zeros(45, dtype=bool)
    expected[[*range(10), 11, 16, 17]] = True
    writer = reopen_writer(path)
    assert writer.written().tolist() == expected.tolist()
    writer.write_rows(18, rows_of(values, 18, 45))   # the resume continues shard 2 (rows 16, 17 kept)
    writer.close()
    expected[18:] = True
    for layer, data in values.items():
        want = data.copy()
        want[[10, 12, 13, 14, 15]] = np.nan                       # rows never written read the fill value
        for found in read_everywhere(path, layer, written_only=False):
            np.testing.assert_array_equal(found, want)
    with open_store(path) as store:
        assert store.written.tolist() == expected.tolist()
        assert store.summary()["layers"]["features.0"]["files"] == 6
    assert not list(path.rglob("*.partial"))


KILLED_MID_SHARD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from actstore.store import reopen_writer
    values = dict(np.load(sys.argv[2]))
    writer = reopen_writer(sys.argv[1])
    writer.write_rows(0, {k: v[:8] for k, v in values.items()})      # shard 0 whole
    writer.write_rows(8, {k: v[8:12] for k, v in values.items()})    # shard 1 half written
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_kill_mid_shard_loses_only_that_shard_and_the_resume_is_bit_identical(tmp_path):
    values, path = synthetic(), tmp_path / "killed.zarr"
    np.savez(tmp_path / "values.npz", **values)
    open_writer(path, 45).close()
    done = subprocess.run([sys.executable, "-c", KILLED_MID_SHARD, str(path), str(tmp_path / "values.npz")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert len(list(path.rglob("c/1/0/0/0.*.partial"))) == 1 and not list(path.rglob("c/1/0/0/0"))
    partial = next(path.rglob("c/1/0/0/0.*.partial"))
    partial.write_bytes(bytes(5000))   # what a larger shard would have flushed before the kill
    files = [p for p in (path / "activations/features.0").rglob("*") if p.is_file()]
    with open_store(path) as store:   # info counts the shards in place, not the unfinished one
        assert store.summary()["layers"]["features.0"]["bytes_stored"] == sum(
            p.stat().st_size for p in files if not p.name.endswith(".partial")) < sum(p.stat().st_size for p in files)
    writer = reopen_writer(path)
    assert writer.written().tolist() == [True] * 8 + [False] * 37   # the unfinished shard: not written
    writer.write_rows(8, rows_of(values, 8, 45))                     # the resume starts at its first row
    writer.close()
    assert not list(path.rglob("*.partial"))
    write(tmp_path / "whole.zarr", values, [(0, 45)])
    for layer, data in values.items():
        for found in read_everywhere(path, layer):
            np.testing.assert_array_equal(found, data)
        shards = sorted((path / "activations" / layer).rglob("c/*/*" if layer == "classifier.4" else "c/*/*/*/*"))
        for shard in shards:   # the same bytes as a store written in one go
            assert shard.read_bytes() == (tmp_path / "whole.zarr" / shard.relative_to(path)).read_bytes()
    with open_store(path) as store:
        assert store.written.all()
        assert store.summary()["layers"]["features.0"]["bytes_stored"] == sum(
            p.stat().st_size for p in (path / "activations/features.0").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def real(tmp_path_factory, image_dir, weights_file) -> dict[str, Path]:
    from actstore import extract
    """The real test images through AlexNet, sharded (the default) and unsharded."""
    root = tmp_path_factory.mktemp("real")
    run = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=LAYERS, in_path=image_dir,
               batch_size=5, chunk_images=2, num_workers=0, quiet=True)
    extract(out_path=root / "sharded.zarr", **run)
    extract(out_path=root / "small-shards.zarr", zarr_shard_rows=4, **run)
    extract(out_path=root / "chunked.zarr", zarr_shard_rows=0, **run)
    return {"sharded": root / "sharded.zarr", "small": root / "small-shards.zarr", "chunked": root / "chunked.zarr"}


def test_real_images_sharded_equal_unsharded_bit_for_bit_in_every_reader(real, image_dir, weights_file):
    for layer in LAYERS:
        expected = read_everywhere(real["chunked"], layer)[0]
        for path in (real["sharded"], real["small"]):
            for found in read_everywhere(path, layer):
                assert found.dtype == expected.dtype and np.array_equal(found, expected)
        with open_store(real["sharded"]) as store:   # streamed in chunk rows of 2 from batches of 5
            forward = reference_activations("alexnet", weights_file("alexnet"), image_dir, store.file_names, layer)
        np.testing.assert_allclose(expected, forward, rtol=1e-5, atol=1e-5)
    with open_store(real["sharded"]) as store:
        rows = len(store)
        assert store.summary()["layers"]["features.2"]["shards"][0] == rows + rows % 2   # one shard holds them all
        assert store.summary()["layers"]["features.2"]["files"] == 1
    with open_store(real["chunked"]) as store:
        assert store.summary()["layers"]["features.2"]["shards"] is None


def test_info_shows_the_shard_layout_and_dry_run_the_file_count(real, image_dir, weights_file, tmp_path):
    info = CliRunner().invoke(app, ["info", str(real["small"])])
    assert info.exit_code == 0, info.output
    assert "features.2: " in info.output and "chunks (2, 64, 27, 27) in shards (4, 64, 27, 27)  3 file(s)" in info.output
    args = ["extract", "--model-name", "alexnet", "--model-path", str(weights_file("alexnet")), "--in-path",
            str(image_dir), "--module-name", LAYERS[0], "--module-name", LAYERS[1], "--chunk-images", "2",
            "--num-workers", "0", "--dry-run", "--out-path"]
    for name, shard_rows in (("small", "4"), ("chunked", "0")):
        plan = CliRunner().invoke(app, [*args, str(tmp_path / "d.zarr"), "--zarr-shard-rows", shard_rows])
        files = sum(1 for p in real[name].rglob("*") if p.is_file())
        assert "free space: " in plan.output and f"; {files} file(s)" in plan.output, plan.output
        assert files == {"small": 26, "chunked": 35}[name]   # 12 zarr.json, 5 row metadata, shards or chunks
    hdf5 = CliRunner().invoke(app, [*args, str(tmp_path / "d.h5"), "--zarr-shard-rows", "4"])
    assert hdf5.exit_code == 1 and "--zarr-shard-rows applies to Zarr stores, not hdf5" in hdf5.output


def test_a_store_written_before_shards_resumes_in_its_own_layout(tmp_path, image_dir, weights_file, real):
    from actstore import extract
    out = tmp_path / "old.zarr"
    run = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=LAYERS, in_path=image_dir,
               out_path=out, batch_size=5, chunk_images=2, num_workers=0, quiet=True)
    first = extract(shard="0/2", zarr_shard_rows=0, **run)       # as stores were written before shards
    assert first.part_rows == (0, 6)
    done = extract(shard="1/2", **run)                            # today's default options
    assert done.complete and done.resumed and done.part_rows == (6, 12)   # chunk rows, not shard rows
    with open_store(out) as store:
        assert store.summary()["layers"]["features.2"]["shards"] is None
    for layer in LAYERS:
        assert np.array_equal(read_everywhere(out, layer)[0], read_everywhere(real["chunked"], layer)[0])


def test_rechunk_converts_between_sharded_and_unsharded(tmp_path):
    values = synthetic(n=40)
    write(tmp_path / "chunked.zarr", values, [(0, 40)], shard_rows=0)
    sharded = rechunk(tmp_path / "chunked.zarr", tmp_path / "sharded.zarr", "image-major", chunk_images=4,
                      shard_rows=16)
    back = rechunk(tmp_path / "sharded.zarr", tmp_path / "back.zarr", "image-major", chunk_images=4, shard_rows=0)
    units = rechunk(tmp_path / "sharded.zarr", tmp_path / "units.zarr", "unit-major")
    assert (sharded.shard_rows, back.shard_rows) == (16, 0) and units.shard_rows == 40
    for path in ("sharded.zarr", "back.zarr", "units.zarr"):
        for layer, expected in values.items():
            for found in read_everywhere(tmp_path / path, layer):
                assert np.array_equal(found, expected)
    with open_store(tmp_path / "sharded.zarr") as store:
        assert store.summary()["layers"]["features.0"]["shards"] == [16, 6, 3, 3]
        assert store.summary()["layers"]["features.0"]["files"] == 3
    with pytest.raises(UserError, match="fewer than one shard of 16 rows"):
        rechunk(tmp_path / "chunked.zarr", tmp_path / "tight.zarr", "image-major", chunk_images=4, shard_rows=16,
                max_memory=2 * 264 * 8)   # 8 rows of 264 B
