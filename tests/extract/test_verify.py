"""Bad inputs are named before work starts, and `actstore verify` tells a whole store from a damaged one."""
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, save_random_weights
from PIL import Image
from typer.testing import CliRunner

from actstore import extract, open_store
from actstore.cli import app
from actstore.errors import UserError
from actstore.store import reopen_writer
from actstore.store.metadata.schema import validate_store
from actstore.verify import verify

FAST = dict(batch_size=4, num_workers=0, quiet=True)


@pytest.fixture()
def with_bad_images(tmp_path, monkeypatch) -> Path:
    root = make_images(tmp_path / "in", "classes", per_class=3)
    good = (root / "cat" / "cat_img1.jpg").read_bytes()
    (root / "cat" / "cut.jpg").write_bytes(good[: len(good) // 2])      # truncated JPEG
    (root / "dog" / "empty.png").write_bytes(b"")                          # zero bytes
    (root / "dog" / "notes.png").write_text("not an image")                # wrong content
    Image.new("L", (400, 300)).save(root / "zebra" / "huge.png")           # too many pixels below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    return root


def test_bad_images_stop_the_run_before_anything_is_written_naming_each(tmp_path, with_bad_images, weights_file):
    out = tmp_path / "s.zarr"
    with pytest.raises(UserError) as error:
        extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.6"],
                in_path=with_bad_images, out_path=out, **FAST)
    message = str(error.value)
    assert message.startswith("4 bad image(s) under")
    for name, reason in [("cat/cut.jpg", "truncated"), ("dog/empty.png", "empty file (0 bytes)"),
                         ("dog/notes.png", "not an image Pillow can read"),
                         ("zebra/huge.png", "decompression-bomb-sized (400x300 pixels)")]:
        assert f"{name}: " in message and reason in message
    assert "--skip-bad-images" in message
    assert not out.exists()


def test_skip_bad_images_stores_exactly_the_good_ones_and_records_the_rest(tmp_path, with_bad_images, weights_file):
    out = tmp_path / "s.h5"
    extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.6"],
            in_path=with_bad_images, out_path=out, skip_bad_images=True, **FAST)
    with open_store(out) as store:
        validate_store(store)
        assert len(store) == 9 and store.complete
        assert not any(n in store.file_names for n in ("cat/cut.jpg", "dog/empty.png"))
        assert store.targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        skipped = {s["file_name"]: s["reason"] for s in store.attrs["skipped_images"]}
    assert sorted(skipped) == ["cat/cut.jpg", "dog/empty.png", "dog/notes.png", "zebra/huge.png"]


@pytest.fixture()
def good_store(tmp_path, image_dir, weights_file) -> Path:
    out = tmp_path / "good.zarr"
    extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["features.2", "classifier.6"],
            in_path=image_dir, out_path=out, chunk_images=4, zarr_shard_rows=4, **FAST)   # 3 shards
    return out


def test_verify_passes_a_whole_store_and_recomputes_rows(good_store, weights_file):
    report = verify(good_store, recompute=3, model_path=weights_file("alexnet"))
    assert report.ok, report.checks
    assert [c.name for c in report.checks] == ["schema", "rows written", "unique file names", "chunks present",
                                               "chunks decode", "finite values", "recompute"]
    assert report.nonfinite == {"features.2": {"nan": 0, "inf": 0}, "classifier.6": {"nan": 0, "inf": 0}}


def test_verify_recompute_refuses_other_weights(good_store, tmp_path):
    other = save_random_weights("alexnet", tmp_path / "other.pth", seed=2)
    with pytest.raises(UserError, match="not the weights file the store was made with"):
        verify(good_store, recompute=2, model_path=other)


def test_verify_finds_a_corrupt_chunk(good_store):
    chunk = good_store / "activations" / "features.2" / "c" / "1" / "0" / "0" / "0"   # rows 4-7's shard
    chunk.write_bytes(b"garbage" * 10)
    report = verify(good_store)
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert list(failed) == ["chunks decode"]
    assert failed["chunks decode"].startswith("layer 'features.2' rows 4-7 are corrupt (index of shard "
                                              f"{chunk}: shard index checksum mismatch)")


def test_verify_counts_nan_and_inf_and_unwritten_rows(good_store):
    writer = reopen_writer(good_store)
    block = np.zeros((4, 1000), dtype=np.float32)
    block[0, :3] = np.nan
    block[1, 0] = np.inf
    writer.write_rows(4, {"classifier.6": block, "features.2": np.zeros((4, 64, 27, 27), np.float32)})
    writer.update_attrs({"status": "incomplete"})
    writer.close()
    report = verify(good_store)
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert report.nonfinite["classifier.6"] == {"nan": 3, "inf": 1}
    assert set(failed) == {"finite values", "rows written"}
    assert "status incomplete" in failed["rows written"]


def test_verify_cli_exit_status(good_store, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(good_store)])
    assert ok.exit_code == 0 and ok.stdout.count("ok  ") == 6
    (good_store / "activations" / "classifier.6" / "c" / "0" / "0").write_bytes(b"")
    bad = runner.invoke(app, ["verify", str(good_store)])
    assert bad.exit_code == 1 and "FAIL chunks decode" in bad.stdout


def test_verify_names_the_rows_of_a_deleted_chunk(good_store):
    shard = good_store / "activations" / "features.2" / "c" / "1" / "0" / "0" / "0"   # rows 4-7
    shard.unlink()
    report = verify(good_store)
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert failed == {"chunks present": "features.2 rows 4-7 have no stored chunk (lost): run the extract command "
                                        "again to recompute them, or restore the files",
                      "chunks decode": f"layer 'features.2' rows 4-7 are recorded as written but their data is "
                                       f"gone ({shard} missing): run the extract command again to recompute "
                                       "them, or restore the file"}
    assert CliRunner().invoke(app, ["verify", str(good_store)]).exit_code == 1


def test_verify_counts_only_the_chunks_of_written_rows(good_store):
    writer = reopen_writer(good_store)
    writer.update_attrs({"status": "incomplete"})
    writer.close()
    written = good_store / "written" / "c" / "2"
    written.unlink()                                                   # rows 8-11 unwritten
    (good_store / "activations" / "classifier.6" / "c" / "2" / "0").unlink()
    report = verify(good_store)
    assert {c.name: c.ok for c in report.checks}["chunks present"]


def test_verify_finds_written_rows_with_no_chunk_in_hdf5(tmp_path, image_dir, weights_file):
    import h5py
    out = tmp_path / "s.h5"
    extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.6"],
            in_path=image_dir, out_path=out, chunk_images=4, **FAST)
    with h5py.File(out, "r+") as file:   # rows 8-11 marked written, their chunks never stored
        old = file["activations/classifier.6"]
        attrs, data = dict(old.attrs), old[:8]
        del file["activations/classifier.6"]
        new = file.create_dataset("activations/classifier.6", shape=(12, 1000), dtype="float32", chunks=(4, 500),
                                  fillvalue=np.nan)
        new[:8] = data
        new.attrs.update(attrs)
    report = verify(out)
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert failed["chunks present"] == ("classifier.6 rows 8-11 have no stored chunk (lost): run the extract "
                                        "command again to recompute them, or restore the files")
    assert failed["chunks decode"] == (f"layer 'classifier.6' rows 8-11 are recorded as written but their data is "
                                       f"gone ({out} chunk (8, 0), {out} chunk (8, 500) missing): run the extract "
                                       "command again to recompute them, or restore the file")


def test_a_random_weights_file_is_recorded_as_a_file_not_as_published_weights(good_store, weights_file):
    import hashlib
    with open_store(good_store) as store:
        assert store.attrs["weights"] == "file@alexnet.pth"
        assert store.attrs["preprocessing_weights"] == "AlexNet_Weights.IMAGENET1K_V1"
        assert store.attrs["weights_sha256"] == hashlib.sha256(weights_file("alexnet").read_bytes()).hexdigest()
        validate_store(store)


def test_verify_recompute_honours_amp_and_channels_last(tmp_path, image_dir, weights_file):
    out = tmp_path / "bf16.zarr"
    extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["features.2", "classifier.6"],
            in_path=image_dir, out_path=out, amp="bfloat16", channels_last=True, **FAST)
    report = verify(out, recompute=3, model_path=weights_file("alexnet"))
    assert report.ok, report.checks
    recompute = report.checks[-1]
    assert recompute.name == "recompute"
    assert recompute.detail.startswith("3 images recomputed (amp bfloat16, channels_last True); max |diff| ")
    # Without autocast the rows differ beyond float32 tolerances: recompute had to use it.
    exact = extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.6"],
                    in_path=image_dir, out_path=tmp_path / "fp32.zarr", **FAST)
    with open_store(out) as bf16, open_store(exact.path) as fp32:
        assert not np.allclose(bf16["classifier.6"][:], fp32["classifier.6"][:], rtol=1e-4, atol=1e-5)


def test_the_txt_layouts_summary_says_files_not_store(tmp_path, image_dir, weights_file):
    result = CliRunner().invoke(app, ["extract", "--model-name", "alexnet", "--model-path",
                                      str(weights_file("alexnet")), "--module-name", "classifier.6",
                                      "--in-path", str(image_dir), "--out-path", str(tmp_path / "out"),
                                      "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith("img/s); files complete")
    assert "store" not in result.stdout.splitlines()[-1].split(";")[-1]


def test_a_lost_shard_is_found_by_its_shard_grid(tmp_path):
    """Sharded Zarr arrays store one object per shard: the check counts shards."""
    import zarr

    from actstore.store.backends.zarr_reader import ZarrReader
    group = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    arr = group.create_array("activations/x", shape=(12, 8), chunks=(2, 4), shards=(4, 8), dtype="float32",
                             fill_value=float("nan"))
    arr[:] = 1.0
    reader = ZarrReader(tmp_path / "s.zarr")
    assert reader.block_rows("activations/x") == 4
    assert reader.missing_blocks("activations/x", [0, 1, 2]) == {}
    shard = tmp_path / "s.zarr" / "activations" / "x" / "c" / "1" / "0"   # rows 4-7
    shard.unlink()
    assert reader.missing_blocks("activations/x", [0, 1, 2]) == {1: [str(shard)]}
