"""Trust at the edges of a run: bad images mid-run, resumes that would change the
numbers, argument checks before anything is created, the legacy layout's files,
and the CLI's conventions."""
import numpy as np
import pytest
from conftest import make_images

from actstore import extract, open_store
from actstore.errors import StoreConflictError

FAST = dict(num_workers=0, quiet=True, chunk_images=4)
LAYERS = ["features.2", "classifier.6"]


def run(weights, images, out, **extra):
    return extract(model_name="alexnet", model_path=weights, in_path=images, out_path=out,
                   module_names=LAYERS, **{**FAST, "batch_size": 4, **extra})


def test_a_resume_with_another_batch_size_is_refused_naming_the_flag_and_value(tmp_path, image_dir,
                                                                                weights_file):
    weights, out = weights_file("alexnet"), tmp_path / "s.zarr"
    run(weights, image_dir, out, batch_size=8)
    with open_store(out) as store:
        assert store.attrs["fingerprint"]["batch_size"] == 8
    with pytest.raises(StoreConflictError) as refused:
        run(weights, image_dir, out, batch_size=5)
    assert str(refused.value) == (f"out path {out}: --batch-size 5 differs from the store's 8: rerun with "
                                  "--batch-size 8 to resume, or pass --overwrite to replace it")
    with pytest.raises(StoreConflictError, match=r"--amp bfloat16 differs from the store's none: rerun "
                                                 r"with --amp none to resume"):
        run(weights, image_dir, out, batch_size=8, amp="bfloat16")
    assert run(weights, image_dir, out, batch_size=8).resumed


def scramble_jpeg(path) -> None:
    """Random bytes in a JPEG's entropy-coded data, header and end marker intact:
    it passes the cheap pre-check and fails only when decoded."""
    data = bytearray(path.read_bytes())
    start, end = data.index(b"\xff\xda") + 20, len(data) - 2
    data[start:end] = np.random.default_rng(0).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.fixture
def scrambled(tmp_path):
    """12 images (flat), the 7th (row 6 of 12, in the second batch of 4) a scrambled JPEG."""
    from actstore.images import ImageSet, _problem
    images = make_images(tmp_path / "in", "flat")
    names = ImageSet.scan(images).file_names
    row = next(r for r, name in enumerate(names) if r >= 5 and name.lower().endswith((".jpg", ".jpeg")))
    scramble_jpeg(images / names[row])
    assert _problem(images / names[row]) == ""
    return images, names[row], row


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_scrambled_jpeg_mid_run_is_skipped_and_recorded_with_skip_bad_images(tmp_path, scrambled,
                                                                               weights_file, suffix):
    images, name, row = scrambled
    out = tmp_path / f"s{suffix}"
    with pytest.warns(UserWarning, match=f"skipped 1 unreadable image.*{name}"):
        result = run(weights_file("alexnet"), images, out, skip_bad_images=True)
    assert result.complete and (result.rows_written, result.rows_skipped) == (11, 1)
    with open_store(out) as store:
        assert store.complete and store.status == "complete"
        assert np.flatnonzero(store.skipped).tolist() == [row] and np.flatnonzero(~store.written).tolist() == [row]
        (record,) = store.attrs["skipped_images"]
        assert (record["file_name"], record["row"]) == (name, row)
        assert record["reason"].startswith("OSError: broken data stream")
    from actstore.verify import verify
    report = verify(out)
    assert report.ok, [(c.name, c.detail) for c in report.checks if not c.ok]
    assert [c.detail for c in report.checks if c.name == "rows written"] == \
        ["11/12 rows written (1 skipped: unreadable images), status complete"]


def test_shard_processes_recording_skipped_images_at_once_keep_both_records(tmp_path, weights_file):
    """Each --shard process records its skipped images apart: two writers that
    opened the store at the same time and record one after the other both
    keep theirs (a rewrite of one root attribute would lose the first)."""
    from actstore.images import ImageSet
    from actstore.store import reopen_writer
    images = make_images(tmp_path / "in", "flat")
    names = ImageSet.scan(images).file_names
    jpegs = [r for r, name in enumerate(names) if name.lower().endswith((".jpg", ".jpeg"))]
    bad = [next(r for r in jpegs if r < 4), next(r for r in jpegs if r >= 8)]     # one in each shard
    for row in bad:
        scramble_jpeg(images / names[row])
    out, weights = tmp_path / "s.zarr", weights_file("alexnet")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        first = run(weights, images, out, skip_bad_images=True, shard="0/2", zarr_shard_rows=4)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        second = run(weights, images, out, skip_bad_images=True, shard="1/2", zarr_shard_rows=4)
    assert not first.complete and second.complete and second.rows_skipped == 2
    with open_store(out) as store:
        assert store.complete and np.flatnonzero(store.skipped).tolist() == bad
        assert [r["row"] for r in store.attrs["skipped_images"]] == bad

    # the race itself: both writers open, then each records
    a, b = reopen_writer(out), reopen_writer(out)
    a.add_skipped([{"file_name": "x.jpg", "reason": "test", "row": 0}])
    b.add_skipped([{"file_name": "y.jpg", "reason": "test", "row": 1}])
    a.close(), b.close()
    with open_store(out) as store:
        assert sorted(r["file_name"] for r in store.attrs["skipped_images"]) == \
            sorted([names[r] for r in bad] + ["x.jpg", "y.jpg"])


def test_a_scrambled_jpeg_with_the_torchvision_decoder_is_skipped_too(tmp_path, scrambled, weights_file):
    images, name, row = scrambled
    out = tmp_path / "s.zarr"
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        result = run(weights_file("alexnet"), images, out, skip_bad_images=True, decoder="torchvision")
    assert result.complete and result.rows_skipped == 1
    with open_store(out) as store:
        assert np.flatnonzero(store.skipped).tolist() == [row] and store.written.sum() == 11


def test_without_skip_the_run_stops_keeping_rows_and_the_advised_rerun_resumes_to_the_reference(
        tmp_path, scrambled, weights_file):
    from actstore.errors import BadImagesError
    images, name, row = scrambled
    weights = weights_file("alexnet")
    with pytest.warns(UserWarning):
        run(weights, images, tmp_path / "reference.zarr", skip_bad_images=True)
    out = tmp_path / "s.zarr"
    with pytest.raises(BadImagesError) as stopped:
        run(weights, images, out)
    assert str(stopped.value) == (f"cannot read 1 image(s): {name} (OSError: broken data stream when reading "
                                  "image file); finished rows are kept: run the same command with "
                                  "--skip-bad-images to resume and leave them out (recorded in the store), "
                                  "or fix them and run again")
    with open_store(out) as store:
        assert store.written.tolist() == [True] * 4 + [False] * 8 and store.status == "incomplete"
    with pytest.warns(UserWarning):
        resumed = run(weights, images, out, skip_bad_images=True)
    assert resumed.resumed and resumed.complete and resumed.rows_this_run == 7
    with open_store(out) as store, open_store(tmp_path / "reference.zarr") as reference:
        assert store.complete and np.flatnonzero(store.skipped).tolist() == [row]
        rows = store.written_rows
        assert rows.tolist() == [r for r in range(12) if r != row]
        for layer in LAYERS:
            assert np.array_equal(store[layer][rows], reference[layer][rows])
    again = run(weights, images, out)   # complete: nothing to do, the skipped row is not retried
    assert again.rows_this_run == 0 and again.complete


def test_split_activations_takes_the_originals_positional_order(tmp_path):
    from actstore.legacy.thingsvision import merge_activations, split_activations
    x = np.arange(40 * 3, dtype=np.float64).reshape(40, 3)
    (tmp_path / "sa").mkdir()
    written = split_activations(tmp_path / "sa", x, ".txt", 10)
    assert [p.name for p in written] == [f"activations_{i:02d}.txt" for i in range(1, 11)]
    assert sorted(p.name for p in (tmp_path / "sa").iterdir()) == [p.name for p in written]
    assert np.array_equal(merge_activations(tmp_path / "sa"), x)
    (tmp_path / "npy").mkdir()
    assert len(split_activations(tmp_path / "npy", x, "npy", 4)) == 4
    (tmp_path / "older").mkdir()
    assert len(split_activations(tmp_path / "older", x, 3)) == 3   # the older (PATH, features, n_splits)


# --------------------------------------------------------------------------- CLI conventions

def cli(*args, **kwargs):
    from typer.testing import CliRunner

    from actstore.cli import app
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def start_with_closed_stdout(*args):
    """The command, started with its reader gone (as `| head -1` does): the pipe
    is closed before the command writes."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "actstore", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    return proc


def test_a_closed_pipe_ends_info_models_verify_and_layers_quietly(tmp_path, image_dir, weights_file):
    out = tmp_path / "s.zarr"
    run(weights_file("alexnet"), image_dir, out)
    commands = (["info", out], ["verify", out], ["models"], ["layers", "alexnet"], ["extract", "--help"])
    started = [start_with_closed_stdout(*args) for args in commands]   # all at once: each imports torch
    for args, proc in zip(commands, started):
        err = proc.stderr.read()
        proc.wait()
        assert (proc.returncode, err) == (0, b""), args


def test_version_prints_the_version():
    from actstore import __version__
    result = cli("--version")
    assert result.exit_code == 0 and result.output == f"actstore {__version__}\n"


def test_interactive_ends_in_one_line_on_end_of_input_and_exits_130_on_ctrl_c(monkeypatch):
    result = cli("extract", "--model-name", "alexnet", "--interactive", input="")   # Ctrl-D, or </dev/null
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == ("module name(s), separated by commas: error: no module chosen "
                                              "(end of input): answer the prompt, or pass --module-name "
                                              "(see `actstore layers alexnet`)")

    def ctrl_c(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr("builtins.input", ctrl_c)
    result = cli("extract", "--model-name", "alexnet", "--interactive")
    assert result.exit_code == 130 and result.output.splitlines()[-1].endswith("error: interrupted")


def test_help_keeps_bracketed_defaults_and_flags_show_no_placeholder():
    result = cli("extract", "--help")
    text = " ".join(result.output.split())   # as wrapped at any width
    assert result.exit_code == 0
    assert "Codec level [default: the codec's own]." in text
    assert "Path to things_concept.tsv [default: data/things_concept.tsv]." in text
    assert "<bool>" not in text
    assert "--flatten-acts, --flatten_acts Store (N, units)" in text


# --------------------------------------------------------------------------- arguments checked first

@pytest.mark.parametrize("flags, message", [
    (["--compression-level", "99"], "--compression-level 99 is out of range for every codec: use 0 to 9"),
    (["--compression", "zstd", "--compression-level", "10"], "--compression-level 10 is out of range for zstd: use 0 to 9"),
    (["--compression", "gzip", "--compression-level", "-1"], "--compression-level -1 is out of range for gzip: use 0 to 9"),
    (["--compression", "none", "--compression-level", "3"], "--compression-level 3 has no meaning with --compression none: leave it out"),
    (["--chunk-channels", "0"], "--chunk-channels must be at least 1, got 0"),
    (["--chunk-channels", "-3"], "--chunk-channels must be at least 1, got -3"),
])
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_bad_arguments_are_refused_in_one_line_before_anything_is_created(tmp_path, image_dir, flags, message,
                                                                          suffix):
    out = tmp_path / "out" / f"s{suffix}"
    result = cli("extract", "--model-name", "alexnet", "--weights", "none", "--module-name", "features.2",
                 "--in-path", image_dir, "--out-path", out, "-q", *flags)
    assert (result.exit_code, result.output) == (1, f"error: {message}\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("split", ["0", "-2"])
def test_export_refuses_a_split_below_one_before_writing(tmp_path, image_dir, weights_file, split):
    store = tmp_path / "s.zarr"
    run(weights_file("alexnet"), image_dir, store)
    result = cli("export", store, "--module-name", "classifier.6", "--out-path", tmp_path / "txt", "--split", split)
    assert (result.exit_code, result.output) == (1, f"error: --split must be between 1 and the number of rows "
                                                    f"(12), got {split}\n")
    assert not (tmp_path / "txt").exists()


def test_the_batch_size_is_capped_at_the_image_count(tmp_path, image_dir, weights_file):
    out = tmp_path / "s.zarr"
    run(weights_file("alexnet"), image_dir, out, batch_size=100_000)
    with open_store(out) as store:
        assert store.attrs["fingerprint"]["batch_size"] == 12 and store.complete
    assert run(weights_file("alexnet"), image_dir, out, batch_size=100_000).resumed


def test_dry_run_gives_the_refusals_of_the_real_run(tmp_path, image_dir, weights_file):
    weights = weights_file("alexnet")
    precious = tmp_path / "precious.h5"
    precious.write_bytes(b"my data")
    with pytest.raises(StoreConflictError) as refused:
        run(weights, image_dir, precious, dry_run=True)
    assert str(refused.value) == (f"out path {precious} exists and is not an actstore store; nothing was "
                                  f"changed: choose a new path such as {tmp_path / 'precious-activations.h5'}")
    assert precious.read_bytes() == b"my data" and sorted(p.name for p in tmp_path.iterdir()) == ["precious.h5"]
    out = tmp_path / "s.zarr"
    run(weights, image_dir, out, batch_size=8)
    with pytest.raises(StoreConflictError, match="--batch-size 5 differs from the store's 8"):
        run(weights, image_dir, out, batch_size=5, dry_run=True)
    assert run(weights, image_dir, out, batch_size=5, dry_run=True, overwrite=True).plan is not None


# --------------------------------------------------------------------------- --overwrite on the txt/npy layout

def legacy_folder(out):
    return out / "alexnet" / "classifier.6"


def run_txt(weights, images, out, **extra):
    return extract(model_name="alexnet", model_path=weights, in_path=images, out_path=out,
                   module_names=["classifier.6"], file_format="txt", **{**FAST, "batch_size": 4, **extra})


def test_overwrite_on_the_txt_layout_replaces_only_its_own_files_after_the_run(tmp_path, image_dir, weights_file):
    weights, out = weights_file("alexnet"), tmp_path / "acts"
    folder = legacy_folder(out)
    folder.mkdir(parents=True)
    for name in ("activations_01.txt", "activations_02.txt", "targets.npy"):   # an earlier split npy-ish run
        (folder / name).write_text("old\n")
    (folder / "activations_notes.txt").write_text("mine\n")
    (folder / "activations_README.md").write_text("mine too\n")
    with pytest.raises(StoreConflictError, match="activations_01.txt already exists"):
        run_txt(weights, image_dir, out)
    run_txt(weights, image_dir, out, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["activations.txt", "activations_README.md",
                                                        "activations_notes.txt", "file_names.txt", "targets.txt"]
    assert (folder / "activations_notes.txt").read_text() == "mine\n"
    assert (folder / "activations_README.md").read_text() == "mine too\n"
    reference = run(weights, image_dir, tmp_path / "ref.zarr")
    with open_store(reference.path) as store:
        np.testing.assert_allclose(np.loadtxt(folder / "activations.txt"), store["classifier.6"][:], rtol=1e-6)


def test_ctrl_c_during_an_overwrite_leaves_the_old_results_intact(tmp_path, image_dir, weights_file, monkeypatch):
    import actstore.extract.loop as loop
    from actstore.errors import Interrupted
    weights, out = weights_file("alexnet"), tmp_path / "acts"
    run_txt(weights, image_dir, out)
    folder = legacy_folder(out)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    calls = []
    forward = loop._forward

    def interrupted_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(*args, **kwargs)
    monkeypatch.setattr(loop, "_forward", interrupted_second_batch)
    with pytest.raises(Interrupted):
        run_txt(weights, image_dir, out, overwrite=True, rnd_seed=7)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# --------------------------------------------------------------------------- errors in one clear line

def test_a_state_dict_with_the_right_keys_but_wrong_shapes_names_the_first_key_and_both_shapes(tmp_path):
    import torch
    import torchvision

    from actstore.errors import UserError
    from actstore.models import load_model
    state = torchvision.models.alexnet(weights=None, num_classes=10).state_dict()
    torch.save(state, tmp_path / "ten.pth")
    with pytest.raises(UserError) as refused:
        load_model("alexnet", model_path=tmp_path / "ten.pth")
    assert str(refused.value) == (f"weights file {tmp_path / 'ten.pth'} does not fit AlexNet: classifier.6.weight "
                                  "has shape (10, 4096) there but (1000, 4096) in the model (another variant, "
                                  "or another number of classes?)")


def test_the_pickle_refusal_names_the_global_it_wanted_without_cutting_words(tmp_path):
    import os
    import pickle

    from actstore.errors import UserError
    from actstore.models import load_model

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())
    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"features.0.weight": Payload()}, protocol=2))
    with pytest.raises(UserError) as refused:
        load_model("alexnet", model_path=bad)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"weights file {bad} is not a plain state dict of "
                                                      "tensors; refused without running it (")
    why = message.split("refused without running it (", 1)[1][:-1]
    assert "getcwd" in why and (why.endswith(" ...") or len(why) <= 160)
    assert why.removesuffix(" ...").split()[-1] in why.replace(" ...", "").split()   # ends on a whole word


def test_the_rechunk_memory_refusal_names_max_memory_mb(tmp_path, image_dir, weights_file):
    from actstore.errors import BadOptionError
    from actstore.store.rechunk import rechunk
    store = tmp_path / "s.zarr"
    run(weights_file("alexnet"), image_dir, store)
    with pytest.raises(BadOptionError, match=r"^--max-memory-mb 0 holds 0 rows of every layer, fewer than one "
                                             r"chunk of 8 rows: raise it or lower --chunk-images$"):
        rechunk(store, tmp_path / "r.zarr", "image-major", chunk_images=8, max_memory=2**20 // 1000)


# --------------------------------------------------------------------------- size planning of the txt layout

def test_dry_run_estimates_the_txt_layout_from_its_own_text(tmp_path, image_dir, weights_file):
    weights = weights_file("alexnet")
    plan = run_txt(weights, image_dir, tmp_path / "acts", dry_run=True).plan
    run_txt(weights, image_dir, tmp_path / "acts")
    written = (legacy_folder(tmp_path / "acts") / "activations.txt").stat().st_size
    (layer,) = plan.layers
    assert layer.raw_bytes == 12 * 1000 * 4
    assert layer.estimated_bytes > 4 * layer.raw_bytes   # text: "%.18e " is 25 bytes a value
    assert abs(layer.estimated_bytes - written) <= 0.01 * written   # 12 images, all in the sample
    assert not (tmp_path / "acts" / "alexnet" / "classifier.6" / "activations.txt.partial").exists()


DISK_SCRIPT = """
set -u
mount -t tmpfs -o size=$SIZE tmpfs "$MNT"
"$@" --out-path "$MNT/$OUT" 2> "$LOG/guard.err"; echo $? > "$LOG/guard.rc"
"$@" --out-path "$MNT/$OUT" --force 2> "$LOG/full.err"; echo $? > "$LOG/full.rc"
find "$MNT" -mindepth 1 > "$LOG/left"
"""


def run_on_a_small_disk(tmp_path, size: str, out: str, args: list) -> dict[str, str]:
    """Run the extract command twice on a fresh tmpfs of ``size``: as given, then
    with --force; return each run's exit status and stderr, and what was left."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import child_env
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare -rm) to mount a small tmpfs")
    (tmp_path / "mnt").mkdir()
    command = [sys.executable, "-m", "actstore", "extract", *map(str, args)]
    subprocess.run(["unshare", "-rm", "bash", "-c", DISK_SCRIPT, "bash", *command], timeout=600, check=True,
                   env=child_env(MNT=str(tmp_path / "mnt"), LOG=str(tmp_path), SIZE=size, OUT=out),
                   cwd=Path(__file__).resolve().parents[2])
    return {name: (tmp_path / name).read_text() for name in ("guard.rc", "guard.err", "full.rc", "full.err", "left")}


def extract_args(weights, images, *layers):
    args = ["--model-name", "alexnet", "--model-path", weights, "--in-path", images, "--batch-size", "4",
            "--chunk-images", "4", "--num-workers", "0", "-q"]
    for layer in layers:
        args += ["--module-name", layer]
    return args


def test_the_txt_layout_gets_the_free_space_guard_and_a_full_disk_leaves_no_partial(tmp_path, image_dir,
                                                                                   weights_file):
    # classifier.6 as text: 12 x 1000 values of 25 bytes, 300 kB; the disk holds 128 kB
    runs = run_on_a_small_disk(tmp_path, "128k", "acts",
                               [*extract_args(weights_file("alexnet"), image_dir, "classifier.6"),
                                "--file-format", "txt"])
    assert runs["guard.rc"].strip() == "1"
    assert runs["guard.err"].startswith("error: the store needs about 30") and "--force" in runs["guard.err"]
    assert runs["full.rc"].strip() == "1" and runs["full.err"].count("\n") == 1, runs["full.err"]
    assert runs["full.err"].startswith("error: out of disk space writing ") and "(No space left on device)" in runs["full.err"]
    assert ".partial" not in runs["left"] and "activations.txt" not in runs["left"]


CREATE_ON_A_FULL_DISK = """
set -u
mount -t tmpfs -o size=64k tmpfs "$MNT"
python -c '
import os, sys
sys.path.insert(0, "tests")
from synthetic import write_store
from actstore.errors import OutOfSpaceError
try:
    write_store(os.environ["MNT"] + "/s.h5", "hdf5", n=4000, conv=(16, 8, 8))
except OutOfSpaceError as error:
    print(error)
'
echo $? > "$LOG/rc"
find "$MNT" -mindepth 1 > "$LOG/left"
"""


def test_an_hdf5_store_on_a_disk_too_small_to_create_it_fails_cleanly(tmp_path):
    """HDF5 cannot close a file whose creation ran out of space, and the process
    then crashed at exit (status 139): creation is refused before it starts."""
    import shutil
    import subprocess
    from pathlib import Path

    from conftest import child_env
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare -rm) to mount a small tmpfs")
    (tmp_path / "mnt").mkdir()
    done = subprocess.run(["unshare", "-rm", "bash", "-c", CREATE_ON_A_FULL_DISK], timeout=120, capture_output=True,
                          text=True, env=child_env(MNT=str(tmp_path / "mnt"), LOG=str(tmp_path)),
                          cwd=Path(__file__).resolve().parents[2])
    assert (tmp_path / "rc").read_text().strip() == "0", done.stderr
    assert done.stdout.startswith(f"out of disk space creating {tmp_path / 'mnt' / 's.h5'} (")
    assert "bytes free, its row metadata needs about" in done.stdout
    assert (tmp_path / "left").read_text() == ""


def test_a_file_name_with_a_line_break_is_refused_by_the_txt_layout_and_kept_by_stores(tmp_path, weights_file):
    from actstore.errors import BadImagesError
    images = make_images(tmp_path / "in", "flat", per_class=1)
    first = sorted(images.iterdir())[0]
    first.rename(images / f"two\nlines{first.suffix}")
    weights = weights_file("alexnet")
    with pytest.raises(BadImagesError) as refused:
        run_txt(weights, images, tmp_path / "acts")
    assert str(refused.value) == (f"'two\\nlines{first.suffix}' has a line break in its name, which file_names.txt of the "
                                  "txt layout cannot hold: rename it, or write a .zarr or .h5 store (they keep "
                                  "any name)")
    assert not (tmp_path / "acts").exists()
    run(weights, images, tmp_path / "s.zarr")
    with open_store(tmp_path / "s.zarr") as store:
        assert f"two\nlines{first.suffix}" in list(store.file_names)
