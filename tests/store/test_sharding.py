"""Zarr v3 shards: many inner chunks per file, written whole by actstore, read
back bit for bit by actstore, zarr-python and tensorstore."""
from __future__ import annotations

import json
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from actstore import UserError, open_store
from actstore.cli import app
from actstore.store import FORMAT_NAME, LayerSpec, Layout, create_writer
from actstore.store.backends.zarr_shards import MISSING, choose_shard_rows, read_index
from actstore.store.rechunk import rechunk

ts = pytest.importorskip("tensorstore")

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


def read_everywhere(path: Path, layer: str) -> list[np.ndarray]:
    """The layer as actstore, zarr-python and tensorstore read it."""
    with open_store(path) as store:
        ours = store[layer][:]
    theirs = zarr.open_array(str(path / "activations" / layer), mode="r")[:]
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "activations" / layer)}}
    return [ours, theirs, ts.open(spec).result().read().result()]


def test_shard_rows_fill_the_row_buffer_up_to_the_cap():
    fc = LayerSpec("fc", (512,), (512,), "float32", (16, 512))
    wide = LayerSpec("layer1", (256, 56, 56), (256, 56, 56), "float32", (16, 4, 56, 56))   # 3.2 MB per image
    huge = LayerSpec("huge", (1024, 256, 256), (1024, 256, 256), "float32", (16, 1, 256, 256))
    assert choose_shard_rows([fc], 1_281_167, 16) == 4096
    assert choose_shard_rows([fc, wide], 1_281_167, 16) == 16       # 16 x 3.2 MB fits 64 MiB
    assert choose_shard_rows([huge], 1_281_167, 16) == 16           # never less than one chunk row
    assert choose_shard_rows([fc], 42, 4) == 44                     # no larger than the store
    assert choose_shard_rows([fc], 1000, 16, requested=0) == 0
    assert choose_shard_rows([fc], 1000, 16, requested=64) == 64
    with pytest.raises(UserError, match=r"--zarr-shard-rows must be 0 \(unsharded\) or a multiple of "
                                        r"--chunk-images \(16\), got 24"):
        choose_shard_rows([fc], 1000, 16, requested=24)


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


def test_real_images_sharded_equal_unsharded_bit_for_bit_in_every_reader(real):
    for layer in LAYERS:
        expected = read_everywhere(real["chunked"], layer)[0]
        for path in (real["sharded"], real["small"]):
            for found in read_everywhere(path, layer):
                assert found.dtype == expected.dtype and np.array_equal(found, expected)
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
