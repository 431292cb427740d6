"""The original THINGSvision txt/npy layout: written byte for byte as the original
code wrote it, read back from files the original wrote, and brought into stores."""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from actstore import UserError, open_store
from actstore.legacy import (
    LegacyWriter,
    export_layer,
    import_legacy,
    merge_activations,
    slices2tensor,
    split_activations,
    tensor2slices,
)
from actstore.store import LayerSpec, Layout, choose_chunks, create_writer
from actstore.store.metadata.schema import validate_store

REPO = Path(__file__).resolve().parents[2]

# A literal copy of the original functions (ViCCo-Group/thingsvision, utils.py at
# commit 009651cb, the module extract.py imported): the fixture writers and readers.
ORIGINAL_SOURCE = '''
def tensor2slices(PATH:str, file_name:str, features:np.ndarray) -> None:
    with open(os.path.join(PATH, file_name), 'w') as outfile:
        outfile.write(f'# Array shape: {features.shape}\\n')
        for i in range(features.shape[0]):
            for j in range(features.shape[1]):
                #formatting string indicates that we are writing out
                #the values in left-justified columns 7 characters in width
                #with 5 decimal places
                np.savetxt(outfile, features[i, j, :, :], fmt='%-7.5f')
                outfile.write('# New slice\\n')

def get_shape(PATH:str, file:str) -> tuple:
    with open(os.path.join(PATH, file)) as f:
        line = f.readline().strip()
        line = re.sub(r'\\D', ' ', line)
        line = line.split()
        shape = tuple(map(int, line))
    return shape

def slices2tensor(PATH:str, file:str) -> np.ndarray:
    slices = np.loadtxt(os.path.join(PATH, file))
    shape = get_shape(PATH, file)
    tensor = slices.reshape(shape)
    return tensor

def split_activations(PATH:str, features:np.ndarray, n_splits:int) -> None:
    splits = np.linspace(0, len(features), n_splits, dtype=int)
    for i in range(1, len(splits)):
        feature_split = features[splits[i-1]:splits[i]]
        np.savetxt(os.path.join(PATH, f'activations_{i:02d}.txt'), feature_split)

def merge_activations(PATH:str) -> np.ndarray:
    activation_splits = np.array([act for act in os.listdir(PATH) if re.search(r'^act', act) and re.search(r'[0-9]+', act) and act.endswith('.txt')])
    enumerations = np.array([int(re.sub(r'\\D', '', act)) for act in activation_splits])
    activation_splits = activation_splits[np.argsort(enumerations)]
    activations = np.vstack([np.loadtxt(os.path.join(PATH, act)) for act in activation_splits])
    return activations
'''
original = {"np": np, "os": os, "re": re}
exec(ORIGINAL_SOURCE, original)


def original_extract_output(folder: Path, features: np.ndarray, targets: np.ndarray) -> None:
    """What the original extract.py wrote after extract_features (its last lines)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(features.shape) == 2:
        np.savetxt(os.path.join(folder, 'activations.txt'), features)
    else:
        original["tensor2slices"](PATH=str(folder), file_name='activations.txt', features=features)
    np.savetxt(os.path.join(folder, 'targets.txt'), targets)


def activations(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """float32 values like ReLU outputs and beyond: zeros, negatives, values over 10."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x[x < -3] = 0
    return x


FILE_NAMES = [f"{c}/{c}_img{i}.png" for c in ("cat", "dog", "zebra") for i in range(1, 5)]
TARGETS = np.repeat(np.arange(3), 4)


def store_attrs(n: int, model_name: str) -> dict:
    """Root attributes that satisfy schemas/root.schema.json."""
    return {"format": "actstore", "format_version": 1, "actstore_version": "0.1.0",
            "created": "2024-01-01T00:00:00+00:00", "model_name": model_name, "weights": "none",
            "weights_sha256": None, "preprocessing": "test", "dtype": "float32", "compression": "zstd",
            "torch_version": "test", "torchvision_version": "test", "device": "cpu", "rnd_seed": 0,
            "fraction": 1.0, "in_path": "/images", "n_images": n, "command_line": "test",
            "status": "complete", "fingerprint": {}, "fingerprint_sha256": "0" * 64}


def make_store(path: Path, layers: dict[str, np.ndarray], file_names=FILE_NAMES, targets=TARGETS,
               chunk_images: int = 4, model_name: str = "alexnet") -> Path:
    """A complete store holding ``layers``, written through the store interface."""
    n = len(next(iter(layers.values())))
    specs = tuple(LayerSpec(name, a.shape[1:], a.shape[1:], "float32",
                            choose_chunks(a.shape[1:], 4, chunk_images)) for name, a in layers.items())
    classes = sorted({name.split("/")[0] for name in file_names}) if "/" in file_names[0] else []
    writer = create_writer(path, "zarr", Layout(n, specs, chunk_images), file_names, targets, classes,
                           store_attrs(n, model_name))
    for start in range(0, n, chunk_images):
        writer.write_rows(start, {name: a[start:start + chunk_images] for name, a in layers.items()})
    writer.close()
    return path


def read_back(path: Path) -> dict:
    with open_store(path) as store:
        validate_store(store)
        return {"layers": {name: store[name][:] for name in store.layers}, "file_names": list(store.file_names),
                "targets": store.targets, "classes": store.classes, "attrs": store.attrs}


# --------------------------------------------------------------------------- bytes as the original wrote them


def test_export_txt_of_4d_layer_is_byte_identical_to_original_tensor2slices(tmp_path):
    x = activations((12, 3, 4, 6))
    store = make_store(tmp_path / "s.zarr", {"features.0": x})
    result = export_layer(store, "features.0", tmp_path / "new", "txt")
    original_extract_output(tmp_path / "old", x, TARGETS)

    assert result.folder == tmp_path / "new" / "alexnet" / "features.0"
    assert [p.name for p in result.files] == ["activations.txt", "targets.txt", "file_names.txt"]
    for name in ("activations.txt", "targets.txt"):
        assert (result.folder / name).read_bytes() == (tmp_path / "old" / name).read_bytes()
    assert (result.folder / "activations.txt").read_text().splitlines()[0] == "# Array shape: (12, 3, 4, 6)"
    assert (result.folder / "file_names.txt").read_text() == "".join(f"{n}\n" for n in FILE_NAMES)


def test_export_txt_of_2d_layer_is_byte_identical_to_np_savetxt(tmp_path):
    x = activations((12, 10))
    store = make_store(tmp_path / "s.zarr", {"classifier.4": x})
    result = export_layer(store, "classifier.4", tmp_path / "new", ".txt")
    original_extract_output(tmp_path / "old", x, TARGETS)

    assert (result.folder / "activations.txt").read_bytes() == (tmp_path / "old" / "activations.txt").read_bytes()


def test_export_split_writes_as_many_files_as_asked_with_the_original_boundaries(tmp_path):
    x = activations((23, 5))
    names = [f"img{i}.png" for i in range(23)]
    store = make_store(tmp_path / "s.zarr", {"classifier.4": x}, names, np.arange(23))
    result = export_layer(store, "classifier.4", tmp_path / "new", "txt", n_splits=9)
    (tmp_path / "old").mkdir()
    original["split_activations"](PATH=str(tmp_path / "old"), features=x, n_splits=10)   # wrote 9 files

    expected = [f"activations_{i:02d}.txt" for i in range(1, 10)]
    assert [p.name for p in result.files[:-2]] == expected
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == expected
    for name in expected:
        assert (result.folder / name).read_bytes() == (tmp_path / "old" / name).read_bytes()


def test_export_npy_keeps_the_native_shape_byte_identical_to_np_save(tmp_path):
    x = activations((12, 3, 4, 6))
    store = make_store(tmp_path / "s.zarr", {"features.0": x})
    result = export_layer(store, "features.0", tmp_path / "new", "npy")

    expected, targets = io.BytesIO(), io.BytesIO()
    np.save(expected, x)
    np.save(targets, TARGETS.astype(np.int64))
    assert [p.name for p in result.files] == ["activations.npy", "targets.npy", "file_names.txt"]
    assert (result.folder / "activations.npy").read_bytes() == expected.getvalue()
    assert (result.folder / "targets.npy").read_bytes() == targets.getvalue()


def test_export_npy_split_files_are_each_np_save_of_their_rows(tmp_path):
    x = activations((12, 7))
    store = make_store(tmp_path / "s.zarr", {"classifier.4": x})
    result = export_layer(store, "classifier.4", tmp_path / "new", "npy", n_splits=5)

    bounds = [0, 2, 4, 7, 9, 12]    # np.linspace(0, 12, 6, dtype=int)
    for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
        assert np.array_equal(np.load(result.folder / f"activations_{index:02d}.npy"), x[lo:hi])
    assert np.array_equal(merge_activations(result.folder), x)


def test_tensor2slices_and_split_activations_write_the_original_bytes(tmp_path):
    x = activations((3, 2, 5, 4))
    y = activations((11, 3))
    for folder in ("ours", "old"):
        (tmp_path / folder).mkdir()
    tensor2slices(tmp_path / "ours", "activations.txt", x)
    original["tensor2slices"](str(tmp_path / "old"), "activations.txt", x)
    split_activations(tmp_path / "ours", y, 3)
    original["split_activations"](str(tmp_path / "old"), y, 4)

    for name in ("activations.txt", "activations_01.txt", "activations_02.txt", "activations_03.txt"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "old" / name).read_bytes()


def test_slices_of_other_ranks_slice_over_all_leading_dimensions(tmp_path):
    x = activations((2, 3, 2, 4, 5))
    tensor2slices(tmp_path, "activations.txt", x)

    lines = (tmp_path / "activations.txt").read_text().splitlines()
    assert lines[0] == "# Array shape: (2, 3, 2, 4, 5)"
    assert lines.count("# New slice") == 2 * 3 * 2
    assert lines[1:6] == [" ".join("%-7.5f" % v for v in row) for row in x[0, 0, 0]] + ["# New slice"]
    assert np.array_equal(original["slices2tensor"](str(tmp_path), "activations.txt"),
                          slices2tensor(tmp_path, "activations.txt"))


# --------------------------------------------------------------------------- reading the original's files


def test_our_readers_read_the_original_files_and_the_original_readers_read_ours(tmp_path):
    x, y = activations((3, 2, 5, 4)), activations((11, 3))
    for folder in ("ours", "old"):
        (tmp_path / folder).mkdir()
    original["tensor2slices"](str(tmp_path / "old"), "activations.txt", x)
    original["split_activations"](str(tmp_path / "old"), y, 4)
    tensor2slices(tmp_path / "ours", "activations.txt", x)
    split_activations(tmp_path / "ours", y, 3)

    old_tensor = original["slices2tensor"](str(tmp_path / "old"), "activations.txt")
    old_merged = original["merge_activations"](str(tmp_path / "old"))
    assert old_tensor.shape == (3, 2, 5, 4) and old_merged.shape == (11, 3)
    assert np.array_equal(slices2tensor(tmp_path / "old", "activations.txt"), old_tensor)
    assert np.array_equal(merge_activations(tmp_path / "old"), old_merged)
    assert np.array_equal(original["slices2tensor"](str(tmp_path / "ours"), "activations.txt"), old_tensor)
    assert np.array_equal(original["merge_activations"](str(tmp_path / "ours")), old_merged)
    assert np.array_equal(old_merged, y)   # 2-D text uses savetxt's default '%.18e': exact for float32


def test_a_hub_model_id_is_one_folder_and_imports_back(tmp_path):
    x = activations((12, 9))
    store = make_store(tmp_path / "s.zarr", {"pooler": x}, model_name="facebook/dinov2-small")
    folder = export_layer(store, "pooler", tmp_path / "out", "npy").folder
    assert folder == tmp_path / "out" / "facebook--dinov2-small" / "pooler"
    import_legacy(folder.parent, tmp_path / "back.zarr")
    back = read_back(tmp_path / "back.zarr")
    assert back["attrs"]["model_name"] == "facebook--dinov2-small" and np.array_equal(back["layers"]["pooler"], x)


def test_import_of_original_slices_folder_equals_the_original_reader(tmp_path):
    x = activations((12, 3, 4, 6))
    folder = tmp_path / "activations" / "alexnet" / "features.0"
    original_extract_output(folder, x, TARGETS)
    import_legacy(folder, tmp_path / "back.zarr")

    back = read_back(tmp_path / "back.zarr")
    expected = original["slices2tensor"](str(folder), "activations.txt").astype(np.float32)
    assert np.array_equal(back["layers"]["features.0"], expected)
    assert float(np.max(np.abs(back["layers"]["features.0"] - x))) <= 5e-6 + 1e-6
    assert back["file_names"] == [""] * 12          # no file_names.txt: names unknown
    assert np.array_equal(back["targets"], TARGETS)
    assert back["classes"] == [] and back["attrs"]["model_name"] == "alexnet"


def test_import_of_original_split_text_files_equals_original_merge(tmp_path):
    y = activations((23, 5))
    folder = tmp_path / "activations" / "vgg16" / "classifier.3"
    folder.mkdir(parents=True)
    original["split_activations"](PATH=str(folder), features=y, n_splits=10)
    np.savetxt(folder / "targets.txt", np.arange(23))
    (folder / "file_names.txt").write_text("".join(f"img{i}.jpg\n" for i in range(23)))
    import_legacy(folder, tmp_path / "back.h5")

    back = read_back(tmp_path / "back.h5")
    assert np.array_equal(back["layers"]["classifier.3"], original["merge_activations"](str(folder)))
    assert np.array_equal(back["layers"]["classifier.3"], y)
    assert back["file_names"] == [f"img{i}.jpg" for i in range(23)]
    assert back["attrs"]["model_name"] == "vgg16" and back["attrs"]["image_layout"] == "flat"


def test_import_records_the_source_folder_and_file_hashes(tmp_path):
    folder = tmp_path / "activations" / "alexnet" / "classifier.4"
    folder.mkdir(parents=True)
    np.save(folder / "activations.npy", activations((12, 4)))
    np.save(folder / "targets.npy", TARGETS)
    import_legacy(folder, tmp_path / "back.zarr")

    source = read_back(tmp_path / "back.zarr")["attrs"]["imported_from"]
    assert source["path"] == str(folder.resolve())
    assert [(f["name"], f["sha256"]) for f in source["files"]] == [
        (name, hashlib.sha256((folder / name).read_bytes()).hexdigest())
        for name in ("activations.npy", "targets.npy")]


def test_import_refuses_activations_that_do_not_match_the_targets(tmp_path):
    folder = tmp_path / "alexnet" / "classifier.4"
    folder.mkdir(parents=True)
    np.savetxt(folder / "activations.txt", activations((10, 4)))
    np.savetxt(folder / "targets.txt", np.arange(12))

    with pytest.raises(UserError, match="hold 10 rows but the targets 12"):
        import_legacy(folder, tmp_path / "back.zarr")
    assert not (tmp_path / "back.zarr").exists()


def test_import_writes_sharded_zarr_equal_to_one_file_per_chunk(tmp_path):
    """Imports are sharded as extraction is: whole shards from split files
    whose boundaries fall inside shards, the last shard partial."""
    y, x = activations((42, 5)), activations((42, 3, 2, 2), seed=1)
    out = tmp_path / "out" / "vgg16"
    for name in ("classifier.3", "features.1"):
        (out / name).mkdir(parents=True)
        np.save(out / name / "targets.npy", np.arange(42) % 3)
    original["split_activations"](PATH=str(out / "classifier.3"), features=y, n_splits=5)  # 4 files
    np.save(out / "features.1" / "activations.npy", x)
    sharded = import_legacy(out, tmp_path / "sharded.zarr", chunk_images=4, zarr_shard_rows=16)
    import_legacy(out, tmp_path / "plain.zarr", chunk_images=4, zarr_shard_rows=0)

    assert sharded.n_images == 42
    with open_store(tmp_path / "sharded.zarr") as a, open_store(tmp_path / "plain.zarr") as b:
        for name, expected in (("classifier.3", y), ("features.1", x)):
            layer = a.summary()["layers"][name]
            assert layer["shards"][0] == 16 and layer["files"] == 3           # 42 rows: 16 + 16 + 10
            assert b.summary()["layers"][name]["shards"] is None
            assert b.summary()["layers"][name]["files"] == 11                 # a file per 4-row chunk
            assert np.array_equal(a[name][:], expected) and np.array_equal(a[name][:], b[name][:])
        assert a.written.all() and a.status == "complete"


def test_an_interrupted_import_resumes_writing_only_the_missing_rows(tmp_path, monkeypatch):
    from actstore.store.backends.zarr import ZarrWriter
    y = activations((40, 6))
    folder = tmp_path / "out" / "vgg16" / "classifier.3"
    folder.mkdir(parents=True)
    original["split_activations"](PATH=str(folder), features=y, n_splits=3)
    np.savetxt(folder / "targets.txt", np.arange(40))
    real, starts = ZarrWriter.write_rows, []

    def write_then_stop(self, start, block):
        starts.append(start)
        if len(starts) == 2:
            raise KeyboardInterrupt
        return real(self, start, block)
    monkeypatch.setattr(ZarrWriter, "write_rows", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        import_legacy(folder, tmp_path / "back.zarr", chunk_images=4, zarr_shard_rows=8)
    with open_store(tmp_path / "back.zarr") as store:
        # chunk rows of 4 go in; the open shard is kept on close with the rows it got
        assert store.written.tolist() == [True] * 4 + [False] * 36 and store.status == "incomplete"

    starts.clear()
    monkeypatch.setattr(ZarrWriter, "write_rows", lambda self, start, block: starts.append(start) or
                        real(self, start, block))
    import_legacy(folder, tmp_path / "back.zarr", chunk_images=4, zarr_shard_rows=8)
    assert starts == list(range(4, 40, 4))            # whole chunk rows, the written ones not again
    back = read_back(tmp_path / "back.zarr")
    assert np.array_equal(back["layers"]["classifier.3"], y) and back["attrs"]["status"] == "complete"


def test_import_refuses_shard_rows_that_split_a_chunk(tmp_path):
    folder = tmp_path / "alexnet" / "classifier.4"
    folder.mkdir(parents=True)
    np.save(folder / "activations.npy", activations((12, 4)))
    np.save(folder / "targets.npy", TARGETS)
    with pytest.raises(UserError, match="--zarr-shard-rows must be 0 .* multiple of --chunk-images"):
        import_legacy(folder, tmp_path / "back.zarr", chunk_images=4, zarr_shard_rows=6)
    assert not (tmp_path / "back.zarr").exists()


# --------------------------------------------------------------------------- round trips


def test_round_trip_store_npy_store_is_exact_for_every_layer(tmp_path):
    layers = {"features.0": activations((12, 3, 4, 6)), "classifier.4": activations((12, 9), seed=1)}
    store = make_store(tmp_path / "s.zarr", layers)
    for name in layers:
        export_layer(store, name, tmp_path / "out", "npy")
    import_legacy(tmp_path / "out" / "alexnet", tmp_path / "back.zarr")   # the model folder: both layers

    back = read_back(tmp_path / "back.zarr")
    assert sorted(back["layers"]) == sorted(layers)
    for name, x in layers.items():
        assert back["layers"][name].dtype == np.float32 and np.array_equal(back["layers"][name], x)
    assert back["file_names"] == FILE_NAMES and np.array_equal(back["targets"], TARGETS)
    assert back["classes"] == ["cat", "dog", "zebra"] and back["attrs"]["image_layout"] == "classes"
    assert back["attrs"]["status"] == "complete"


def test_round_trip_store_txt_store_is_within_the_text_rounding(tmp_path):
    x, y = activations((12, 3, 4, 6)), activations((12, 9), seed=1)
    store = make_store(tmp_path / "s.zarr", {"features.0": x, "classifier.4": y})
    slices = export_layer(store, "features.0", tmp_path / "out", "txt", n_splits=3).folder
    export_layer(store, "classifier.4", tmp_path / "out", "txt", n_splits=5)
    import_legacy(tmp_path / "out" / "alexnet", tmp_path / "back.zarr")

    back = read_back(tmp_path / "back.zarr")["layers"]
    assert np.array_equal(back["classifier.4"], y)                       # '%.18e' is exact for float32
    assert np.array_equal(back["features.0"], merge_activations(slices).astype(np.float32))
    assert float(np.max(np.abs(back["features.0"] - x))) <= 5e-6 + 1e-6  # '%-7.5f': 5 decimals


def test_more_decimals_keep_more_digits(tmp_path):
    x = activations((12, 3, 4, 6))
    store = make_store(tmp_path / "s.zarr", {"features.0": x})
    folder = export_layer(store, "features.0", tmp_path / "out", "txt", decimals=8).folder
    import_legacy(folder, tmp_path / "back.zarr")

    back = read_back(tmp_path / "back.zarr")["layers"]["features.0"]
    assert (folder / "activations.txt").read_text().splitlines()[1].split()[0] == "%-10.8f" % x[0, 0, 0, 0]
    assert float(np.max(np.abs(back - x))) <= 5e-9 + float(np.max(np.spacing(np.abs(x))))


# --------------------------------------------------------------------------- refusals and interruptions


def test_export_refuses_existing_activations_and_overwrite_touches_nothing_else(tmp_path):
    store = make_store(tmp_path / "s.zarr", {"classifier.4": activations((12, 4))})
    folder = export_layer(store, "classifier.4", tmp_path / "out", "txt", n_splits=2).folder
    (folder / "notes.txt").write_text("mine")

    with pytest.raises(UserError, match="activations_01.txt already exists"):
        export_layer(store, "classifier.4", tmp_path / "out", "npy")
    export_layer(store, "classifier.4", tmp_path / "out", "npy", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == [   # the txt run's targets.txt went with it
        "activations.npy", "file_names.txt", "notes.txt", "targets.npy"]
    assert (folder / "notes.txt").read_text() == "mine"


def test_an_interrupted_legacy_writer_leaves_no_activations_file(tmp_path):
    spec = LayerSpec("classifier.4", (4,), (4,), "float32", (4, 4))
    writer = LegacyWriter(tmp_path, Layout(12, (spec,), 4), FILE_NAMES, TARGETS, file_format="txt",
                          model_name="alexnet")
    writer.write_rows(0, {"classifier.4": activations((4, 4))})
    assert writer.written().tolist() == [True] * 4 + [False] * 8
    writer.close()

    assert list((tmp_path / "alexnet" / "classifier.4").iterdir()) == []
    assert not LegacyWriter.resumable   # an extraction to this layout starts afresh


def test_split_counts_outside_one_to_n_are_refused(tmp_path):
    store = make_store(tmp_path / "s.zarr", {"classifier.4": activations((12, 4))})
    with pytest.raises(UserError, match="--split must be between 1 and the number of rows"):
        export_layer(store, "classifier.4", tmp_path / "out", "txt", n_splits=13)


# --------------------------------------------------------------------------- extract --file-format txt|npy


def test_extract_to_txt_writes_what_export_of_the_same_run_writes(tmp_path, image_dir, weights_file):
    from actstore import extract
    common = dict(model_name="alexnet", model_path=weights_file("alexnet"), in_path=image_dir,
                  module_names=["features.12", "classifier.4"], batch_size=5, chunk_images=4,
                  num_workers=0, quiet=True)
    extract(out_path=tmp_path / "run.zarr", **common)
    extract(out_path=tmp_path / "direct", file_format="txt", **common)
    for name in ("features.12", "classifier.4"):
        export_layer(tmp_path / "run.zarr", name, tmp_path / "exported", "txt")

    for name in ("features.12", "classifier.4"):
        direct, exported = tmp_path / "direct" / "alexnet" / name, tmp_path / "exported" / "alexnet" / name
        assert sorted(p.name for p in direct.iterdir()) == ["activations.txt", "file_names.txt", "targets.txt"]
        for file in ("activations.txt", "targets.txt", "file_names.txt"):
            assert (direct / file).read_bytes() == (exported / file).read_bytes()
    assert slices2tensor(tmp_path / "direct" / "alexnet" / "features.12", "activations.txt").shape == (12, 256, 6, 6)


def test_extract_to_npy_writes_3d_and_up_as_text_slices_with_one_warning(tmp_path, image_dir, weights_file):
    from actstore import extract
    with pytest.warns(UserWarning, match="written as text slices") as caught:
        extract(model_name="alexnet", model_path=weights_file("alexnet"), in_path=image_dir,
                module_names=["features.12", "classifier.6"], out_path=tmp_path, file_format=".npy",
                batch_size=12, num_workers=0, quiet=True)
    assert len([w for w in caught if "text slices" in str(w.message)]) == 1
    folder = tmp_path / "alexnet"
    assert sorted(p.name for p in (folder / "features.12").iterdir()) == [
        "activations.txt", "file_names.txt", "targets.npy"]
    assert np.load(folder / "classifier.6" / "activations.npy").shape == (12, 1000)
    assert np.array_equal(np.load(folder / "classifier.6" / "targets.npy"), TARGETS)


# --------------------------------------------------------------------------- the command line and memory


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actstore", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def test_an_old_job_line_runs_as_actstore_extract_and_its_output_imports(tmp_path, image_dir, weights_file):
    # The original's spellings: --model_name, --module_name, --in_path, --out_path, --batch_size, --rnd_seed.
    old = run_cli("extract", "--model_name", "alexnet", "--model_path", weights_file("alexnet"),
                  "--module_name", "classifier.4", "--in_path", image_dir, "--out_path", tmp_path / "acts",
                  "--batch_size", "4", "--rnd_seed", "42", "--fraction", "0.5", "--file_format", ".txt",
                  "--num-workers", "0", "--quiet")
    assert old.returncode == 0, old.stderr
    folder = tmp_path / "acts" / "alexnet" / "classifier.4"
    assert np.loadtxt(folder / "activations.txt").shape == (6, 4096)

    imported = run_cli("import-legacy", folder, "--out-path", tmp_path / "back.zarr")
    exported = run_cli("export", tmp_path / "back.zarr", "--module-name", "classifier.4", "--file-format",
                       "txt", "--out-path", tmp_path / "again")
    refused = run_cli("import-legacy", folder, "--out-path", tmp_path / "back.zarr")

    assert imported.returncode == 0 and imported.stdout.startswith("imported 6 rows of 1 layer(s)")
    assert exported.returncode == 0 and exported.stdout.startswith("exported classifier.4 (6, 4096)")
    assert (tmp_path / "again" / "alexnet" / "classifier.4" / "activations.txt").read_bytes() == \
        (folder / "activations.txt").read_bytes()
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: ") and "exists" in refused.stderr


MEMORY_SCRIPT = textwrap.dedent("""
    import re, sys
    from actstore.legacy import export_layer
    from actstore.store import open_store
    store, out, mode = sys.argv[1:]
    with open_store(store) as s:
        s["conv"][:16]                      # the baseline reads one chunk too
    if mode == "export":
        export_layer(store, "conv", out, "npy")
    assert "torch" not in sys.modules
    # VmHWM: this process's peak RSS (ru_maxrss would carry pytest's over the exec)
    status = open("/proc/self/status").read()
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024)
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS read from /proc (Linux)")
def test_export_of_a_layer_six_times_the_memory_cap_stays_under_the_cap(tmp_path):
    cap = 64 * 2**20
    n, shape = 1536, (64, 32, 32)                       # 256 KiB per image, 384 MiB in all
    spec = LayerSpec("conv", shape, shape, "float32", choose_chunks(shape, 4, 16))
    writer = create_writer(tmp_path / "big.zarr", "zarr", Layout(n, (spec,), 16), [f"i{i}" for i in range(n)],
                           np.zeros(n, dtype=np.int64), [], store_attrs(n, "net"))
    pattern = np.arange(16 * 64 * 32 * 32, dtype=np.float32).reshape(16, *shape) % 97
    for start in range(0, n, 16):
        writer.write_rows(start, {"conv": pattern + start})
    writer.close()
    with open_store(tmp_path / "big.zarr") as store:
        validate_store(store)
    raw = n * 64 * 32 * 32 * 4
    assert raw >= 6 * cap

    def peak(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, tmp_path / "big.zarr", tmp_path / "out", mode],
                              capture_output=True, text=True, cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    grown = peak("export") - peak("baseline")
    out = np.load(tmp_path / "out" / "net" / "conv" / "activations.npy", mmap_mode="r")
    assert out.shape == (n, *shape) and np.array_equal(out[-16:], pattern + (n - 16))
    assert grown < cap, f"export grew RSS by {grown / 2**20:.0f} MiB for a {raw / 2**20:.0f} MiB layer"


def test_verify_skips_what_makes_no_sense_for_an_imported_store_and_says_so(tmp_path):
    from actstore.verify import verify
    folder = tmp_path / "activations" / "alexnet" / "features.0"
    original_extract_output(folder, activations((12, 3, 4, 6)), TARGETS)     # no file_names.txt
    import_legacy(folder, tmp_path / "back.zarr")
    report = verify(tmp_path / "back.zarr", recompute=3)
    assert report.ok
    skipped = {c.name: c.detail for c in report.checks if c.skipped}
    assert skipped == {
        "unique file names": "skipped: imported from files that did not name the images, so the store has no file "
                             "names",
        "recompute": "cannot recompute: this store was imported from another tool's files, so its model and "
                     "preprocessing are not recorded"}
    assert [c.name for c in report.checks if not c.skipped] == ["schema", "rows written", "chunks present",
                                                                "chunks decode", "finite values"]
