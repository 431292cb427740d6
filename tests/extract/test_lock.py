"""One writer per store (per shard): a second live writer is refused at once,
naming the first; a writer killed with -9 never blocks the next run."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import child_env

from actstore import extract, open_store
from actstore.errors import StoreBusyError
from actstore.store.io import lock

ROOT = Path(__file__).resolve().parents[2]
LAYER = "classifier.6"

# A real extraction that stops inside its main loop, holding the store open
# for writing, until it is killed.
HOLDER = textwrap.dedent("""
    import sys, time
    import actstore.extract as ex
    def hold(*args, **kwargs):
        print("holding", flush=True)
        time.sleep(600)
    ex.run_batches = hold
    ex.extract(model_name="alexnet", model_path=sys.argv[1], module_names=["classifier.6"], in_path=sys.argv[2],
               out_path=sys.argv[3], shard=sys.argv[4], batch_size=4, chunk_images=4, num_workers=0, quiet=True,
               **({"zarr_shard_rows": 4} if sys.argv[3].endswith(".zarr") else {}))
""")


def hold(weights: Path, images: Path, out, shard: str = "0/1") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(weights), str(images), str(out), shard],
                            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line == "holding\n", proc.stderr.read()
    return proc


def kill_9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def busy_message(out, pid: int, what: str | None = None) -> str:
    """The refusal, with the holder's start time as a pattern."""
    return (re.escape(f"{what or out} is being written by another process (host {socket.gethostname()}, "
                      f"pid {pid}, since ") + r"\d{4}-\d\d-\d\dT[0-9:.]+\+00:00" +
            re.escape("): wait for it to finish, or stop it and run this again to resume"))


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_a_second_writer_is_refused_naming_the_first_and_a_killed_one_blocks_nothing(
        tmp_path, image_dir, weights_file, suffix, monkeypatch):
    weights, out = weights_file("alexnet"), tmp_path / f"s{suffix}"
    run = dict(model_name="alexnet", model_path=weights, module_names=[LAYER], in_path=image_dir, out_path=out,
               batch_size=4, chunk_images=4, num_workers=0, quiet=True)
    first = hold(weights, image_dir, out)
    try:
        with pytest.raises(StoreBusyError, match="^" + busy_message(out, first.pid) + "$"):
            extract(**run)
        with pytest.raises(StoreBusyError, match=busy_message(out, first.pid)):
            extract(overwrite=True, **run)          # --overwrite never removes a live writer's store
        with monkeypatch.context() as patch:        # refused before the model loads, --dry-run too
            patch.setattr("actstore.extract.ready_model", lambda *a: pytest.fail("the model was loaded"))
            with pytest.raises(StoreBusyError, match=busy_message(out, first.pid)):
                extract(dry_run=True, **run)
        lock_file = tmp_path / f".s{suffix}.0-of-1.lock"
        assert json.loads(lock_file.read_text())["pid"] == first.pid
    finally:
        kill_9(first)
    # The killed writer left its lock file (and, for HDF5, the "open for write"
    # flag of a SWMR writer); the next run takes both over and completes.
    result = extract(**run)
    assert result.complete and result.resumed and result.rows_this_run == 12
    uninterrupted = extract(**{**run, "out_path": tmp_path / "ref" / f"s{suffix}"})
    with open_store(out) as store, open_store(uninterrupted.path) as reference:
        assert np.array_equal(store[LAYER][:], reference[LAYER][:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref", f"s{suffix}"]   # the lock file is gone


def test_shards_hold_their_own_locks_and_the_same_shard_twice_is_refused(tmp_path, image_dir, weights_file):
    weights, out = weights_file("alexnet"), tmp_path / "s.zarr"
    run = dict(model_name="alexnet", model_path=weights, module_names=[LAYER], in_path=image_dir, out_path=out,
               batch_size=4, chunk_images=4, zarr_shard_rows=4, num_workers=0, quiet=True)
    first = hold(weights, image_dir, out, "0/2")
    try:
        with pytest.raises(StoreBusyError, match="^" + busy_message(out, first.pid, f"shard 0/2 of {out}")):
            extract(shard="0/2", **run)
        other = extract(shard="1/2", **run)        # the other shard runs alongside
        assert other.rows_this_run == 8 and other.part_rows == (4, 12)
    finally:
        kill_9(first)
    rest = extract(shard="0/2", **run)
    assert rest.rows_this_run == 4 and rest.complete


def test_a_lock_file_removed_while_waiting_is_not_shared(tmp_path):
    """A holder removes its lock file on release; a taker that opened the old
    file must not count its lock on it as the store's."""
    out = tmp_path / "s.zarr"
    with lock.acquire(out):
        assert lock.held_here(out)
        with pytest.raises(StoreBusyError):
            lock.acquire(out)          # a second open file description in this process is refused too
    assert not lock.held_here(out) and not (tmp_path / ".s.zarr.0-of-1.lock").exists()
    with lock.acquire(out) as again:
        assert json.loads(Path(again.lock_path).read_text())["pid"] == os.getpid()
