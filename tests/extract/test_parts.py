"""Many processes, one store: shards write disjoint whole chunks and the result
equals a single-process run bit for bit."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import child_env, make_images
from typer.testing import CliRunner

from actstore import extract, open_store
from actstore.cli import app
from actstore.errors import UserError
from actstore.extract.parts import part_rows
from actstore.store.metadata.schema import validate_store

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["features.2", "classifier.6"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("shards") / "in", "classes", per_class=14)   # 42 images


@pytest.fixture(scope="module")
def single(tmp_path_factory, images, weights_file) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("single") / "one.zarr"
    extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=LAYERS, in_path=images,
            out_path=out, batch_size=5, chunk_images=4, zarr_shard_rows=0, num_workers=0, quiet=True)
    with open_store(out) as store:
        return {layer: store[layer][:] for layer in LAYERS}


def cli_args(weights: Path, images: Path, out: Path, *extra) -> list[str]:
    args = ["extract", "--model-name", "alexnet", "--model-path", str(weights), "--in-path", str(images),
            "--out-path", str(out), "--batch-size", "5", "--chunk-images", "4", "--num-workers", "0", "-q",
            "--zarr-shard-rows", "8"]   # shards of 2 chunks: 6 shards to split between processes
    for layer in LAYERS:
        args += ["--module-name", layer]
    return args + list(extra)


def assert_equals_single(out: Path, single: dict) -> None:
    with open_store(out) as store:
        validate_store(store)
        assert store.complete
        for layer in LAYERS:
            assert np.array_equal(store[layer][:], single[layer])


@pytest.mark.parametrize("n_rows, chunk, count", [(42, 4, 3), (100, 16, 3), (5, 4, 4), (64, 16, 4)])
def test_shards_are_disjoint_whole_chunks_covering_every_row(n_rows, chunk, count):
    ranges = [part_rows(n_rows, chunk, i, count) for i in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n_rows
    for (lo, hi), (next_lo, _) in zip(ranges, ranges[1:]):
        assert hi == next_lo and lo % chunk == 0 and lo <= hi


@pytest.mark.slow
def test_concurrent_shard_processes_equal_a_single_process_run(tmp_path, images, weights_file, single):
    out = tmp_path / "sharded.zarr"
    procs = [subprocess.Popen([sys.executable, "-m", "actstore",
                               *cli_args(weights_file("alexnet"), images, out, "--shard", f"{i}/3")],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env())
             for i in range(3)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in results), results
    outputs = "".join(e for _, e, _ in results)      # -q sends the summary to stderr
    assert "shard 0/3 (rows 0-15)" in outputs and "shard 2/3 (rows 32-41)" in outputs
    assert "store complete" in outputs               # whichever shard finished last
    assert_equals_single(out, single)
    assert not list(tmp_path.glob(".sharded.zarr.creating-*"))   # losers of the creation race cleaned up


@pytest.mark.slow
def test_torchrun_processes_shard_by_rank(tmp_path, images, weights_file, single):
    if not shutil.which("torchrun"):
        pytest.skip("torchrun is not on PATH")
    out, one = tmp_path / "torchrun.zarr", tmp_path / "one.zarr"
    # torchrun runs each process with one thread; CPU results are bit-identical
    # for the same thread count, so the single-process run gets one thread too.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = subprocess.run([sys.executable, "-m", "actstore", *cli_args(weights_file("alexnet"), images, one)],
                               cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert reference.returncode == 0, reference.stderr
    done = subprocess.run(["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "actstore",
                           *cli_args(weights_file("alexnet"), images, out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shard 0/2 (rows 0-23)" in done.stderr and "shard 1/2 (rows 24-41)" in done.stderr
    with open_store(one) as store:
        assert store.attrs["torch_threads"] == 1
        assert_equals_single(out, {layer: store[layer][:] for layer in LAYERS})


@pytest.mark.slow
def test_a_killed_shard_rerun_fills_only_its_rows(tmp_path, images, weights_file, single):
    out = tmp_path / "s.zarr"
    weights = weights_file("alexnet")
    runner = CliRunner()
    assert runner.invoke(app, cli_args(weights, images, out, "--shard", "0/2")).exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "actstore", *cli_args(weights, images, out, "--shard", "1/2")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        with open_store(out) as store:
            if store.written[24:].sum() >= 8:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_store(out) as store:
        assert store.status == "incomplete" and store.written[:24].all() and not store.written.all()
        before = {layer: store[layer][:24] for layer in LAYERS}
    rerun = runner.invoke(app, cli_args(weights, images, out, "--shard", "1/2"))
    assert rerun.exit_code == 0, rerun.stderr
    assert "shard 1/2 (rows 24-41): resumed" in rerun.stderr + rerun.stdout
    assert_equals_single(out, single)
    with open_store(out) as store:
        for layer in LAYERS:
            assert np.array_equal(store[layer][:24], before[layer])


def test_an_overlapping_shard_layout_is_refused(tmp_path, images, weights_file):
    out = tmp_path / "s.zarr"
    weights = weights_file("alexnet")
    common = dict(model_name="alexnet", model_path=weights, module_names=LAYERS, in_path=images, out_path=out,
                  batch_size=5, chunk_images=4, zarr_shard_rows=8, num_workers=0, quiet=True)
    first = extract(shard="0/2", **common)
    assert first.rows_this_run == 24 and not first.complete
    with open_store(out) as store:
        kept = store["classifier.6"][:24]
    with pytest.raises(UserError, match=r"is being written as 2 shard\(s\) \(0-of-2\); rows 0-15 of shard 0/3 "
                                        r"would overlap theirs: run every process with --shard I/2"):
        extract(shard="0/3", **common)
    with pytest.raises(UserError, match=r"run every process with --shard I/2"):
        extract(**common)          # one process over every row would overlap too
    with open_store(out) as store:
        assert store.written.sum() == 24
        assert np.array_equal(store["classifier.6"][:24], kept)
    done = extract(shard="1/2", **common)   # the right layout still finishes it
    assert done.complete


def test_shards_need_zarr_and_no_overwrite(tmp_path, images, weights_file):
    common = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=LAYERS,
                  in_path=images, num_workers=0, quiet=True)
    with pytest.raises(UserError, match="--shard needs a Zarr store: hdf5 has no safe concurrent writers"):
        extract(out_path=tmp_path / "s.h5", shard="0/2", **common)
    with pytest.raises(UserError, match="--overwrite cannot be combined with --shard"):
        extract(out_path=tmp_path / "s.zarr", shard="0/2", overwrite=True, **common)
    with pytest.raises(UserError, match=r"--shard '2of3' is not I/N"):
        extract(out_path=tmp_path / "s.zarr", shard="2of3", **common)
    with pytest.raises(UserError, match=r"--shard 3/3: I must be in 0..N-1"):
        extract(out_path=tmp_path / "s.zarr", shard="3/3", **common)


def test_torchrun_variables_stand_in_for_shard(monkeypatch):
    from actstore.extract.options import shard_and_device as _shard_and_device
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert _shard_and_device(None, "cuda") == (2, 4, "cuda:1")
    assert _shard_and_device(None, "cpu") == (2, 4, "cpu")
    assert _shard_and_device("0/2", "cuda") == (0, 2, "cuda")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _shard_and_device(None, "cuda") == (0, 1, "cuda")
