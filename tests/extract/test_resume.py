"""Never lose work: kill -9, Ctrl-C and a full disk leave a store that resumes to
exactly what an uninterrupted run writes."""
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import child_env, make_images

from actstore import extract, open_store
from actstore.errors import RowsNotWrittenError
from actstore.store.metadata.schema import validate_store

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["features.2", "classifier.6"]


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("many") / "in", "classes", per_class=50)   # 150 images


def command(weights: Path, images: Path, out: Path, *extra: str) -> list[str]:
    args = ["extract", "--model-name", "alexnet", "--model-path", weights, "--in-path", images,
            "--out-path", out, "--batch-size", "6", "--chunk-images", "4", "--num-workers", "0", "-q"]
    for layer in LAYERS:
        args += ["--module-name", layer]
    if Path(out).suffix != ".h5":   # shards of 3 chunks: rows land during the run, not only at its end
        args += ["--zarr-shard-rows", "12"]
    return [sys.executable, "-m", "actstore", *map(str, args), *extra]


def reference(weights: Path, images: Path, out: Path) -> dict[str, np.ndarray]:
    extract(model_name="alexnet", model_path=weights, in_path=images, out_path=out, module_names=LAYERS,
            batch_size=6, chunk_images=4, num_workers=0, quiet=True)
    with open_store(out) as store:
        return {layer: store[layer][:] for layer in LAYERS}


def wait_for_rows(out: Path, at_least: int, proc: subprocess.Popen, expected=None, timeout: float = 120) -> None:
    """Poll the store while it is being written; with ``expected``, every poll
    also checks that a reader sees only finished, correct rows."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if out.exists():   # stores appear whole (created under another name, then renamed)
            if expected:
                rows = assert_written_rows_are_right(out, expected, sample=8)
            else:
                with open_store(out) as store:
                    rows = int(store.written.sum())
            if rows >= at_least:
                return
        time.sleep(0.1)


def assert_written_rows_are_right(out: Path, expected: dict[str, np.ndarray], sample: int | None = None) -> int:
    """Every written row (or ``sample`` random ones, to keep polls cheap) holds
    exactly the uninterrupted run's values; unwritten rows cannot be read."""
    with open_store(out) as store:
        rows = store.written_rows
        if sample is not None and len(rows) > sample:
            rows = np.sort(np.random.default_rng(len(rows)).choice(rows, sample, replace=False))
        assert store.status == "incomplete" or store.written.all()
        for layer in LAYERS:
            assert np.array_equal(store[layer][rows], expected[layer][rows])
        if not store.written.all():
            with pytest.raises(RowsNotWrittenError):
                store[LAYERS[0]][np.flatnonzero(~store.written)[:1]]
        return int(store.written.sum())


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_repeated_kill_9_and_resume_equals_an_uninterrupted_run(tmp_path, many_images, weights_file, suffix):
    weights = weights_file("alexnet")
    expected = reference(weights, many_images, tmp_path / f"ref{suffix}")
    out = tmp_path / f"killed{suffix}"
    rng = random.Random(7)
    kills = 0
    for attempt in range(6):
        log = tmp_path / f"run{attempt}.err"
        with open(log, "w") as err:
            proc = subprocess.Popen(command(weights, many_images, out), cwd=ROOT, env=child_env(),
                                    stdout=subprocess.DEVNULL, stderr=err)
        before = assert_written_rows_are_right(out, expected) if out.exists() else 0
        wait_for_rows(out, before + 1, proc, expected)  # readers see only finished rows meanwhile
        time.sleep(rng.uniform(0.0, 0.1))             # then dies at a random moment
        if proc.poll() is not None:
            proc.wait()
            assert proc.returncode == 0, f"run {attempt} failed:\n{log.read_text()}"
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert assert_written_rows_are_right(out, expected) > before
        if kills == 3:
            break
    done = subprocess.run(command(weights, many_images, out), cwd=ROOT, capture_output=True, text=True,
                          env=child_env())
    assert done.returncode == 0, done.stderr
    assert kills >= 3, "the run finished before it could be killed three times"
    with open_store(out) as store:
        validate_store(store)
        assert store.complete
        for layer in LAYERS:
            assert np.array_equal(store[layer][:], expected[layer])
    if suffix == ".zarr":   # the killed runs' unfinished shard files are gone
        assert not list((out / "activations").rglob("*.partial"))


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_rerun_completes(tmp_path, weights_file):
    # 450 images: several seconds of work after the first rows appear, so the
    # interrupt always lands mid-run, however fast extraction gets.
    images = make_images(tmp_path / "in", "classes", per_class=150)
    weights = weights_file("alexnet")
    out = tmp_path / "c.zarr"
    # Ctrl-C as in a terminal: a test run started in the background (`cmd &`
    # in a script) ignores SIGINT, and its children would inherit that.
    python, *args = command(weights, images, out)
    with_ctrl_c = [python, "-c", "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "sys.argv[0] = 'actstore'; runpy.run_module('actstore', run_name='__main__')", *args[2:]]
    proc = subprocess.Popen(with_ctrl_c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    wait_for_rows(out, 8, proc)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "rows are kept; run the same command again to resume" in err
    assert "Traceback" not in err
    with open_store(out) as store:
        kept = int(store.written.sum())
        assert 0 < kept < 450 and store.status == "incomplete"
    done = subprocess.run(command(weights, images, out), cwd=ROOT, capture_output=True, text=True,
                          env=child_env())
    assert done.returncode == 0, done.stderr
    expected = reference(weights, images, tmp_path / "ref.zarr")
    with open_store(out) as store:
        assert store.complete
        assert np.array_equal(store["features.2"][:], expected["features.2"])


MOUNT_SCRIPT = textwrap.dedent("""
    set -u
    mount -t tmpfs -o size=6m tmpfs "$MNT"
    "$@" --out-path "$MNT/s.zarr" 2> "$LOG/first.err"; echo $? > "$LOG/first.rc"
    cp -r "$MNT/s.zarr" "$LOG/partial.zarr" 2>/dev/null
    mount -o remount,size=200m "$MNT"
    "$@" --out-path "$MNT/s.zarr" 2> "$LOG/second.err"; echo $? > "$LOG/second.rc"
    cp -r "$MNT/s.zarr" "$LOG/final.zarr"
""")


@pytest.mark.slow
def test_a_full_disk_keeps_finished_rows_and_resumes_once_space_is_freed(tmp_path, many_images, weights_file):
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs a private mount namespace (unshare -rm) to mount a small tmpfs")
    weights = weights_file("alexnet")
    (tmp_path / "mnt").mkdir()
    # --force: start although the estimate does not fit, as when a shared disk fills up mid-run.
    args = [a for a in command(weights, many_images, Path("unused"), "--force") if a not in ("--out-path", "unused")]
    env = child_env(MNT=str(tmp_path / "mnt"), LOG=str(tmp_path))
    subprocess.run(["unshare", "-rm", "bash", "-c", MOUNT_SCRIPT, "bash", *args], env=env, cwd=ROOT,
                   timeout=600, check=True)
    first_err = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "1", first_err
    assert "out of disk space writing" in first_err and "free space and run the same command again" in first_err
    assert "Traceback" not in first_err
    expected = reference(weights, many_images, tmp_path / "ref.zarr")
    kept = assert_written_rows_are_right(tmp_path / "partial.zarr", expected)
    assert 0 < kept < 150
    assert not list((tmp_path / "partial.zarr").rglob("*.partial"))   # no stray temporary chunk files
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.err").read_text()
    with open_store(tmp_path / "final.zarr") as store:
        assert store.complete
        for layer in LAYERS:
            assert np.array_equal(store[layer][:], expected[layer])
