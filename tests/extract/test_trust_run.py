"""Trust in a run (issue 23): the probe measures what the transform makes,
SIGTERM is Ctrl-C, a resume notices changed images, a full HDF5 disk reports
its first error, bad out paths fail in one line, and the small things."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch
import torchvision
from conftest import make_images
from test_resume import many_images  # noqa: F401, F811  (fixture: 150 images)
from torchvision import transforms as T

from actstore import extract, open_store
from actstore.errors import InputSizeError
from actstore.models import from_module

FAST = dict(num_workers=0, quiet=True, chunk_images=4, batch_size=4)


# --- 1. from_module measures the transform's real output --------------------------------------

def resnet18(weights_file):
    net = torchvision.models.resnet18()
    net.load_state_dict(torch.load(weights_file("resnet18"), weights_only=True))
    return net.eval()


def hooked(net, module_name, transform, images):
    """layer4's output from a plain forward hook, one image at a time: no actstore involved."""
    from PIL import Image
    captured = []
    handle = dict(net.named_modules())[module_name].register_forward_hook(
        lambda m, i, o: captured.append(o.detach().clone()))
    with torch.no_grad():
        for path in images:
            with Image.open(path) as image:
                net(transform(image.convert("RGB")).unsqueeze(0))
    handle.remove()
    return torch.cat(captured).numpy()


@pytest.mark.parametrize("size, grid", [(160, 5), (288, 9)])
def test_from_module_stores_the_map_size_the_transform_makes(tmp_path, image_dir, weights_file, size, grid):
    net = resnet18(weights_file)
    transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])
    out = tmp_path / "r.zarr"
    extract(model=from_module(net, transform, name="resnet18"), module_names=["layer4"], in_path=image_dir,
            out_path=out, **FAST)
    with open_store(out) as store:
        stored = store["layer4"][:]
        expected = hooked(net, "layer4", transform, [image_dir / n for n in store.file_names])
    assert stored.shape == (12, 512, grid, grid)
    np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-5)


def test_a_transform_whose_output_size_depends_on_the_image_is_refused_before_anything_is_written(
        tmp_path, image_dir, weights_file):
    out = tmp_path / "r.zarr"
    model = from_module(resnet18(weights_file), T.Compose([T.Resize(160), T.ToTensor()]), name="resnet18")
    with pytest.raises(InputSizeError, match=r"^the transform's output size depends on the image \(3x"):
        extract(model=model, module_names=["layer4"], in_path=image_dir, out_path=out, **FAST)
    assert not out.exists()


def test_a_batch_of_another_size_is_refused_before_it_is_written(tmp_path, weights_file):
    """A transform that the probe cannot catch (its size depends on the width, past 500 px): the
    batch holding the odd image is refused naming it, the batches before it are kept."""
    from PIL import Image
    images = make_images(tmp_path / "in", "flat", per_class=2)   # img1 ... img6, 24-48 px
    for old in images.glob("img5.*"):
        old.unlink()
    Image.new("RGB", (600, 40), "gray").save(images / "img5.png")
    fixed = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor()])

    def wide_ones_cut(image):
        return fixed(image) if image.width < 500 else fixed(image)[:, :32]
    out = tmp_path / "r.zarr"
    model = from_module(resnet18(weights_file), wide_ones_cut, name="resnet18")
    with pytest.raises(InputSizeError) as refused:
        extract(model=model, module_names=["layer4"], in_path=images, out_path=out, **FAST)
    assert str(refused.value) == ("img5.png comes out of the transform as 3x32x64, not the 3x64x64 the store was "
                                  "laid out for: end the transform with a fixed crop, e.g. T.CenterCrop(224); "
                                  "the rows written before it are kept")
    with open_store(out) as store:
        assert store.written.tolist() == [True] * 4 + [False] * 2


def test_a_model_that_refuses_the_transforms_size_is_refused_in_one_line_before_anything_is_written(tmp_path,
                                                                                                    image_dir):
    """The README's one-fixed-transform example: timm's DINOv2 takes 518 px only."""
    from actstore import load_model
    vit = load_model("vit_small_patch14_dinov2", source="timm", weights="none")
    fixed = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor()])
    out = tmp_path / "vit.zarr"
    with pytest.raises(InputSizeError) as refused:
        extract(model=from_module(vit.module, fixed, name="dinov2"), module_names=["blocks.11"],
                in_path=image_dir, out_path=out, **FAST)
    assert str(refused.value) == (
        "model dinov2 fails on the transform's 3x224x224 images (AssertionError: Input height (224) doesn't "
        "match model (518).); it takes 518x518 only: use a transform that makes 518x518 images, or build it "
        "with timm.create_model(..., dynamic_img_size=True) to take other sizes")
    assert not out.exists()


# --- 8. an out path no store can be written at: one line, from --dry-run too --------------------

def alexnet_args(weights, images, *extra):
    return ["extract", "--model-name", "alexnet", "--model-path", str(weights), "--in-path", str(images),
            "--module-name", "classifier.6", "--num-workers", "0", "--batch-size", "4", "-q", *map(str, extra)]


@pytest.mark.parametrize("dry_run", [False, True])
def test_an_out_path_under_a_file_or_a_folder_layout_on_a_file_is_refused_in_one_line(tmp_path, image_dir,
                                                                                    weights_file, dry_run):
    from actstore.errors import OutPathError
    (tmp_path / "notes").write_text("mine")
    common = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.6"],
                  in_path=image_dir, dry_run=dry_run, **FAST)
    with pytest.raises(OutPathError) as refused:
        extract(out_path=tmp_path / "notes" / "sub" / "s.zarr", **common)
    assert str(refused.value) == (f"out path {tmp_path}/notes/sub/s.zarr: {tmp_path}/notes is a file, not a "
                                  "folder: choose an --out-path inside a folder")
    with pytest.raises(OutPathError) as refused:
        extract(out_path=tmp_path / "notes", **common)   # no suffix: the original tool's folder of text files
    assert str(refused.value) == (f"out path {tmp_path}/notes is a file, and the txt layout writes a folder of "
                                  "files there: choose another --out-path")
    assert (tmp_path / "notes").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


UNWRITABLE = """
set -u
mount --bind "$RO" "$RO" && mount -o remount,ro,bind "$RO"
mount -t tmpfs -o size=64k tmpfs "$FULL"
dd if=/dev/zero of="$FULL/fill" bs=4k 2>/dev/null
python -c '
import json, os, sys
from typer.testing import CliRunner
from actstore.cli import app
runner, ro, full = CliRunner(), os.environ["RO"], os.environ["FULL"]
for out in (f"{ro}/s.zarr", f"{ro}/s.h5", f"{full}/s.zarr", f"{full}/sub/s.h5"):
    for dry in ([], ["--dry-run"]):
        done = runner.invoke(app, [*sys.argv[1:], "--out-path", out, *dry])
        print(json.dumps([done.exit_code, done.output]))
' "$@"
"""


def test_a_read_only_or_full_out_folder_is_refused_in_one_line_by_the_run_and_by_dry_run(tmp_path, image_dir,
                                                                                      weights_file):
    import json
    import shutil
    import subprocess
    from pathlib import Path

    from conftest import child_env
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare -rm) to mount a read-only folder and a small tmpfs")
    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir(), full.mkdir()
    done = subprocess.run(["unshare", "-rm", "bash", "-c", UNWRITABLE, "bash",
                           *alexnet_args(weights_file("alexnet"), image_dir)],
                          env=child_env(RO=str(ro), FULL=str(full)), capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    runs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(runs) == 8, done.stderr
    read_only = [f"error: out path {ro}/s.{suffix} is on a read-only file system: choose an --out-path where you "
                 "can write\n" for suffix in ("zarr", "h5")]
    disk_full = [f"error: out of disk space at {full} (No space left on device) before anything was written: "
                 "free space or choose another --out-path\n"] * 2
    assert runs == [[1, line] for line in (read_only[0], read_only[0], read_only[1], read_only[1], *disk_full * 2)]


def test_a_batch_size_that_is_not_a_number_is_refused_in_a_few_short_lines(tmp_path, image_dir, weights_file):
    from typer.testing import CliRunner

    from actstore.cli import app
    done = CliRunner().invoke(app, alexnet_args(weights_file("alexnet"), image_dir, "--batch-size", "abc",
                                                "--out-path", tmp_path / "s.zarr"))
    assert done.exit_code == 2
    lines = done.output.strip().splitlines()
    assert len(lines) <= 4, done.output   # typer's usage error: short, no box, no traceback
    assert "Invalid value for '--batch-size'" in lines[-1] and "Traceback" not in done.output
    assert not (tmp_path / "s.zarr").exists()


# --- 4. SIGTERM and SIGHUP stop a run as Ctrl-C does -------------------------------------------

def stop_at_random_points(tmp_path, images, weights, suffix: str, signals, expected: dict,
                          seed: int = 0) -> list[int]:
    """Start the extraction as a subprocess and send each of ``signals`` at a
    random moment after a new row has landed; then resume it to the end. Checks
    each stop (exit status 128 + signal, one line naming the kept rows, the rows
    the store holds, an HDF5 file not left open for write) and that the finished
    store equals ``expected`` (an uninterrupted run) bit for bit. Returns the rows
    kept at each stop. Odd attempts decode in a worker process, which the signal
    reaches too (as Slurm signals every process of a job step)."""
    import random
    import subprocess

    import h5py
    from conftest import child_env
    from test_resume import LAYERS, ROOT, assert_written_rows_are_right, command, wait_for_rows
    n_images = len(expected[LAYERS[0]])
    out, rng, kept = tmp_path / f"stopped{suffix}", random.Random(seed), []
    for attempt, signum in enumerate(signals):
        proc = subprocess.Popen(command(weights, images, out, "--num-workers", str(attempt % 2)), cwd=ROOT,
                                env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        before = kept[-1] if kept else 0
        wait_for_rows(out, before + 1, proc)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:
            break   # finished first: the resume below has nothing left to do
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=120)
        rows = assert_written_rows_are_right(out, expected)
        name = signal.Signals(signum).name
        assert (proc.returncode, err) == (128 + signum, f"error: terminated by {name}: {rows} of {n_images} rows "
                                          "are kept; run the same command again to resume\n")
        assert rows > before
        kept.append(rows)
        if suffix == ".h5":
            with h5py.File(out, "r") as plain:   # no SWMR: refused if left "open for write"
                assert plain["written"][:].sum() == rows
    done = subprocess.run(command(weights, images, out), cwd=ROOT, capture_output=True, text=True, env=child_env())
    assert done.returncode == 0, done.stderr
    with open_store(out) as store:
        assert store.complete
        for layer in LAYERS:
            assert np.array_equal(store[layer][:], expected[layer])
    return kept


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, many_images, weights_file) -> dict:  # noqa: F811
    from test_resume import reference
    return reference(weights_file("alexnet"), many_images, tmp_path_factory.mktemp("reference") / "ref.zarr")


@pytest.mark.slow
@pytest.mark.parametrize("suffix, signals", [(".zarr", [signal.SIGTERM, signal.SIGTERM]),
                                             (".h5", [signal.SIGHUP])])
def test_sigterm_and_sighup_keep_the_rows_and_the_resume_equals_an_uninterrupted_run(
        tmp_path, many_images, weights_file, uninterrupted, suffix, signals):  # noqa: F811
    kept = stop_at_random_points(tmp_path, many_images, weights_file("alexnet"), suffix, signals, uninterrupted)
    assert len(kept) == len(signals), "the run finished before every signal was sent"


# --- 7. HDF5 on a disk that fills mid-run --------------------------------------------------------

FILL_UP = """
set -u
mount -t tmpfs -o size=6500k tmpfs "$MNT"
"$@" --out-path "$MNT/s.h5" 2> "$LOG/err"; echo $? > "$LOG/rc"
cp "$MNT/s.h5" "$LOG/partial.h5"
"""


def test_hdf5_on_a_disk_that_fills_mid_run_reports_the_first_error_and_the_rows_the_file_holds(tmp_path,
                                                                                            weights_file):
    """features.2 uncompressed: 16-row chunks of 3.0 MB; the disk holds two. The
    second block's marks cannot be flushed, so the file keeps 16 rows, not 32."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import h5py
    from conftest import child_env
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare -rm) to mount a small tmpfs")
    images, weights = make_images(tmp_path / "in", "classes", per_class=16), weights_file("alexnet")
    common = dict(model_name="alexnet", model_path=weights, in_path=images, module_names=["features.2"],
                  batch_size=16, num_workers=0, quiet=True, compression="none")
    (tmp_path / "mnt").mkdir()
    args = ["extract", "--model-name", "alexnet", "--model-path", weights, "--in-path", images, "--module-name",
            "features.2", "--batch-size", "16", "--num-workers", "0", "-q", "--compression", "none", "--force"]
    subprocess.run(["unshare", "-rm", "bash", "-c", FILL_UP, "bash", sys.executable, "-m", "actstore",
                    *map(str, args)], env=child_env(MNT=str(tmp_path / "mnt"), LOG=str(tmp_path)),
                   cwd=Path(__file__).resolve().parents[2], timeout=300, check=True)
    partial = tmp_path / "partial.h5"
    with h5py.File(partial, "r") as plain:   # any HDF5 reader opens it: not left "open for write"
        kept = int(plain["written"][:].sum())
    assert ((tmp_path / "rc").read_text(), (tmp_path / "err").read_text()) == (
        "1\n", f"error: out of disk space writing {tmp_path}/mnt/s.h5 (No space left on device): {kept} of 48 "
               "rows are kept; free space and run the same command again to resume\n")
    assert kept == 16
    assert extract(out_path=partial, **common).resumed   # the same command, once space is freed
    extract(out_path=tmp_path / "ref.h5", **common)
    with open_store(partial) as resumed, open_store(tmp_path / "ref.h5") as reference:
        assert resumed.complete and np.array_equal(resumed["features.2"][:], reference["features.2"][:])


# --- 5. a resume notices changed images; every run is recorded -----------------------------------

def interrupted_after_first_batch(monkeypatch, **options):
    """Run ``extract(**options)`` and stop it with Ctrl-C after its first batch."""
    from actstore.errors import Interrupted
    from actstore.extract import loop
    original, calls = loop._forward, []

    def forward_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(loop, "_forward", forward_then_stop)
        with pytest.raises(Interrupted):
            extract(**options)


def test_a_resume_from_a_copy_with_replaced_images_is_refused_naming_them_and_each_run_is_recorded(
        tmp_path, weights_file, monkeypatch):
    import shutil

    from PIL import Image

    from actstore.errors import ChangedImagesError
    first = make_images(tmp_path / "first", "classes")
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    out = tmp_path / "s.zarr"
    common = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.6"],
                  out_path=out, **FAST)
    interrupted_after_first_batch(monkeypatch, in_path=first, **common)
    import zarr
    stopped = zarr.open_group(out, mode="r")   # targets are whole from creation: no unwritten row reads -1
    assert stopped["written"][:].sum() == 4 and stopped["targets"][:].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for name in ("cat/cat_img2.png", "zebra/zebra_img3.png"):   # same names, other pixels
        with Image.open(copy / name) as image:
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(copy / name)
    with pytest.raises(ChangedImagesError) as refused:
        extract(in_path=copy, **common)
    assert str(refused.value) == (f"out path {out}: 2 image(s) differ in content from those the store was started "
                                  "with: cat/cat_img2.png, zebra/zebra_img3.png; point --in-path at the images the "
                                  "store was started with, or pass --overwrite to start again")
    with pytest.raises(ChangedImagesError):
        extract(in_path=copy, dry_run=True, **common)
    shutil.copy(first / "cat/cat_img2.png", copy / "cat/cat_img2.png")
    shutil.copy(first / "zebra/zebra_img3.png", copy / "zebra/zebra_img3.png")
    assert extract(in_path=copy, command_line="actstore extract --second", **common).resumed
    with open_store(out) as store:
        runs = store.attrs["runs"]
        assert [run["in_path"] for run in runs] == [str(first.resolve()), str(copy.resolve())]
        assert runs[1]["command_line"] == "actstore extract --second" and runs[0]["time"] < runs[1]["time"]
        assert store.complete


# --- 9. the small things -------------------------------------------------------------------------

def test_a_download_error_is_cut_between_words_never_inside_a_url(monkeypatch):
    from huggingface_hub import constants

    from actstore.errors import UserError
    from actstore.models._common import download_guard
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)   # no probe of the hub
    url = "https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m/resolve/main/model.safetensors"
    said = ("We couldn't connect to the hub to load this file, couldn't find it in the cached files and it looks "
            f"like the model is not the path to a directory containing a file named model.safetensors: {url} "
            "Check your internet connection or see how to run the library in offline mode")
    with pytest.raises(UserError) as refused:
        with download_guard("timm weights for vit_small_patch14_dinov2"):
            raise OSError(said)
    message = str(refused.value)
    assert f"model.safetensors: {url} ..." in message and "Check your" not in message
    assert message.endswith("; on a machine without internet, pass --model-path with a local copy, or --weights none")


def test_a_resume_refusal_names_dtype_and_an_unused_seed_or_a_renamed_weights_file_do_not_block_it(
        tmp_path, image_dir, weights_file, monkeypatch):
    import shutil

    from actstore.errors import StoreConflictError
    out = tmp_path / "s.zarr"
    common = dict(model_name="alexnet", module_names=["features.4"], in_path=image_dir, out_path=out, **FAST)
    interrupted_after_first_batch(monkeypatch, model_path=weights_file("alexnet"), **common)
    with pytest.raises(StoreConflictError) as refused:   # float16 also splits features.4 into other chunks
        extract(model_path=weights_file("alexnet"), dtype="float16", **common)
    assert str(refused.value) == (f"out path {out}: --dtype float16 differs from the store's float32: rerun with "
                                  "--dtype float32 to resume, or pass --overwrite to replace it")
    renamed = shutil.copy(weights_file("alexnet"), tmp_path / "same-weights-other-name.pth")
    result = extract(model_path=renamed, rnd_seed=7, **common)   # the seed picks nothing: all images, a file
    assert result.resumed and result.complete


def test_bad_images_left_out_at_the_pre_check_are_warned_about_and_counted_on_the_last_line(tmp_path,
                                                                                          weights_file):
    from typer.testing import CliRunner

    from actstore.cli import app
    images = make_images(tmp_path / "in", "flat", per_class=1)
    (images / "img2.png").write_bytes(b"")   # empty: the pre-check leaves it out
    done = CliRunner().invoke(app, alexnet_args(weights_file("alexnet"), images, "--skip-bad-images",
                                                "--out-path", tmp_path / "s.zarr"))
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0] == ("warning: left out 1 bad image(s) (recorded in skipped_images): img2.png: empty file "
                        "(0 bytes)")
    assert lines[-1].endswith("store complete (1 bad image(s) skipped; see skipped_images)")


def test_empty_class_folders_are_warned_about(tmp_path):
    from actstore.images import ImageSet
    images = make_images(tmp_path / "in", "classes", per_class=1)
    (images / "aardvark").mkdir()
    with pytest.warns(UserWarning, match=r"^1 class folder\(s\) under .* hold no images and are left out "
                                         r"\(aardvark\): targets number the other folders$"):
        scanned = ImageSet.scan(images)
    assert scanned.classes == ("cat", "dog", "zebra") and scanned.targets == (0, 1, 2)
