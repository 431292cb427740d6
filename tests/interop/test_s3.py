"""Stores on object storage: extraction, resume, shards, reading, info/verify and
--overwrite at ``s3://`` URLs, against a local S3 server (moto) that these
tests start on 127.0.0.1; every store equals the same run written locally."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BUCKET
from synthetic import write_store
from typer.testing import CliRunner

from actstore import UserError, extract, open_store
from actstore.errors import Interrupted
from actstore.models import load_model
from actstore.store import exists, is_store, remove_store

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["features.2", "classifier.4"]
RUN = dict(module_names=LAYERS, batch_size=4, chunk_images=4, num_workers=0, quiet=True)


@pytest.fixture
def url(s3_env, request) -> str:
    """A fresh store URL for each test."""
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}/store.zarr"


@pytest.fixture(scope="module")
def local(tmp_path_factory, image_dir, weights_file) -> dict[str, np.ndarray]:
    """The same extraction written to a local store: every layer and the row metadata."""
    path = tmp_path_factory.mktemp("local") / "alexnet.zarr"
    extract(model_name="alexnet", model_path=weights_file("alexnet"), in_path=image_dir, out_path=path, **RUN)
    return read_all(path)


def read_all(path) -> dict[str, np.ndarray]:
    with open_store(path) as store:
        assert store.complete
        return {"file_names": store.file_names, "targets": store.targets,
                **{layer: store[layer][:] for layer in store.layers}}


def assert_same(path, expected: dict[str, np.ndarray]) -> None:
    found = read_all(path)
    assert sorted(found) == sorted(expected)
    for key, values in expected.items():
        assert np.array_equal(found[key], values), key


def test_extraction_to_s3_equals_the_local_store(url, image_dir, weights_file, local):
    result = extract(model_name="alexnet", model_path=weights_file("alexnet"), in_path=image_dir,
                     out_path=url, **RUN)
    assert result.path == url and result.rows_written == 12 and result.file_format == "zarr"
    assert_same(url, local)


def test_an_interrupted_s3_extraction_resumes_to_the_local_store(url, image_dir, weights_file, local, monkeypatch):
    from actstore.extract.writer_thread import BackgroundWriter
    model = load_model("alexnet", model_path=weights_file("alexnet"))
    put, calls = BackgroundWriter.put, []

    def ctrl_c_at_the_second_batch(self, *args):   # Ctrl-C in the main thread, as a user's
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        put(self, *args)
    with monkeypatch.context() as patch:
        patch.setattr(BackgroundWriter, "put", ctrl_c_at_the_second_batch)
        with pytest.raises(Interrupted, match="4 of 12 rows are kept"):
            extract(model=model, in_path=image_dir, out_path=url, **RUN)
    with open_store(url) as store:
        assert store.written.tolist() == [True] * 4 + [False] * 8 and store.status == "incomplete"
    result = extract(model=model, in_path=image_dir, out_path=url, **RUN)
    assert result.resumed and result.rows_this_run == 8
    assert_same(url, local)


SHARD = textwrap.dedent("""
    import sys
    from actstore import extract
    extract(model_name="alexnet", model_path=sys.argv[1], in_path=sys.argv[2], out_path=sys.argv[3],
            shard=sys.argv[4], module_names=["features.2", "classifier.4"], batch_size=4,
            chunk_images=4, zarr_shard_rows=4, num_workers=0, quiet=True)   # 3 shards of one chunk
""")


def test_two_shard_processes_write_one_s3_store(url, s3_env, image_dir, weights_file, local):
    procs = [subprocess.Popen([sys.executable, "-c", SHARD, str(weights_file("alexnet")), str(image_dir),
                               url, f"{i}/2"], cwd=ROOT, env=s3_env, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert_same(url, local)
    with open_store(url) as store:
        assert store.status == "complete"
    from actstore.store import reopen_writer
    with reopen_writer(url) as writer:
        assert {name: claim["rows"] for name, claim in writer.claims().items()} == \
            {"0-of-2": [0, 4], "1-of-2": [4, 12]}


CREATE_OR_JOIN = textwrap.dedent("""
    import sys, time
    import numpy as np
    from actstore.store import FORMAT_NAME, LayerSpec, Layout, create_writer, exists, is_store, reopen_writer
    url, start, shard = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    time.sleep(max(0.0, start - time.time()))
    if exists(url) and is_store(url):                     # what extract does, without the model
        writer = reopen_writer(url)
    else:
        try:
            writer = create_writer(url, "zarr", Layout(16, (LayerSpec("fc", (8,), (8,), "float32", (4, 8)),), 4),
                                   [str(i) for i in range(16)], [0] * 16, ["a"],
                                   {"format": FORMAT_NAME, "fingerprint": {"run": 1}})
        except FileExistsError:
            writer = reopen_writer(url)
    assert writer.root_attrs()["fingerprint"] == {"run": 1}
    writer.write_rows(8 * shard, {"fc": np.full((8, 8), shard + 1, dtype=np.float32)})
""")


@pytest.mark.parametrize("stagger", [0.0, 0.15])
def test_processes_creating_one_s3_store_at_once_all_join_it(url, s3_env, stagger):
    start = time.time() + 2.0     # after both interpreters have imported zarr and s3fs
    procs = [subprocess.Popen([sys.executable, "-c", CREATE_OR_JOIN, url, str(start + shard * stagger), str(shard)],
                              cwd=ROOT, env=s3_env, stderr=subprocess.PIPE, text=True) for shard in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    with open_store(url) as store:
        assert store["fc"][:].tolist() == [[1.0] * 8] * 8 + [[2.0] * 8] * 8


def test_a_shard_larger_than_an_upload_part_is_streamed_as_one_multipart_upload(url, monkeypatch):
    from actstore.store import FORMAT_NAME, LayerSpec, Layout, create_writer
    from actstore.store.backends import shard_stream
    monkeypatch.setattr(shard_stream, "UPLOAD_PART_BYTES", 5 * 2**20)     # S3's smallest part
    parts = []
    real_open = shard_stream.UploadSink.__init__

    def counting(self, fs, path, index_at_start):
        real_open(self, fs, path, index_at_start)
        real_upload = self.file._upload_chunk
        self.file._upload_chunk = lambda final=False: parts.append(final) or real_upload(final)
    monkeypatch.setattr(shard_stream.UploadSink, "__init__", counting)
    values = np.random.default_rng(0).standard_normal((40, 65536), dtype=np.float32)   # ~10 MB, incompressible
    spec = LayerSpec("fc", (65536,), (65536,), "float32", (4, 16384))
    writer = create_writer(url, "zarr", Layout(40, (spec,), 4, shard_rows=40), [str(i) for i in range(40)],
                           [0] * 40, ["a"], {"format": FORMAT_NAME})
    fs, shard = fsspec.filesystem("s3", use_listings_cache=False), f"{url[5:]}/activations/fc/c/0/0"
    for start in range(0, 40, 4):
        writer.write_rows(start, {"fc": values[start:start + 4]})
        if start == 20:   # parts uploaded, the object not there yet
            assert parts and not fs.exists(shard) and not writer.written().any()
    writer.close()
    assert len(parts) >= 2 and fs.exists(shard)
    with open_store(url) as store:
        assert store.written.all() and np.array_equal(store["fc"][:], values)
    import zarr
    assert np.array_equal(zarr.open_array(f"{url}/activations/fc", mode="r")[:], values)   # zarr-python too


KILLED_MID_UPLOAD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from actstore.store import FORMAT_NAME, LayerSpec, Layout, create_writer
    from actstore.store.backends import shard_stream
    shard_stream.UPLOAD_PART_BYTES = 5 * 2**20     # S3's smallest part
    url = sys.argv[1]
    values = np.random.default_rng(0).standard_normal((40, 65536), dtype=np.float32)
    spec = LayerSpec("fc", (65536,), (65536,), "float32", (4, 16384))
    writer = create_writer(url, "zarr", Layout(40, (spec,), 4, shard_rows=40), [str(i) for i in range(40)],
                           [0] * 40, ["a"], {"format": FORMAT_NAME})
    for start in range(0, 24, 4):                   # parts of the shard uploaded, the upload not completed
        writer.write_rows(start, {"fc": values[start:start + 4]})
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_writers_multipart_upload_is_aborted_when_its_shard_is_written_again(url, s3_env):
    """S3 keeps (and bills) the parts of an upload that was never completed
    until it is aborted: the writer that writes the shard again aborts it."""
    from actstore.store import reopen_writer
    fs = fsspec.filesystem("s3", use_listings_cache=False)
    bucket, key = url[5:].split("/", 1)
    shard = f"{key}/activations/fc/c/0/0"

    def pending() -> list[str]:
        listing = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=shard)
        return [upload["Key"] for upload in listing.get("Uploads", [])]
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_UPLOAD, url], cwd=ROOT, env=s3_env,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert pending() == [shard] and not fs.exists(f"{bucket}/{shard}")
    values = np.random.default_rng(0).standard_normal((40, 65536), dtype=np.float32)
    with reopen_writer(url) as writer:
        assert not writer.written().any()
        for start in range(0, 40, 4):
            writer.write_rows(start, {"fc": values[start:start + 4]})
    assert pending() == []
    with open_store(url) as store:
        assert store.written.all() and np.array_equal(store["fc"][:], values)


def test_a_bucket_that_refuses_listing_uploads_warns_once_and_writing_goes_on(monkeypatch):
    """A policy without s3:ListBucketMultipartUploads: one warning naming the
    lifecycle rule that does the cleanup instead, never a failed write."""
    from actstore.store.backends import shard_stream
    monkeypatch.setattr(shard_stream, "_cannot_abort", False)
    calls = []

    class Refusing:
        def split_path(self, path):
            return path.split("/", 1) + [None]

        def call_s3(self, method, **kwargs):
            calls.append(method)
            raise PermissionError("Access Denied")
    with pytest.warns(UserWarning, match=r"^unfinished uploads of killed writers cannot be aborted in bucket b "
                                         r"\(Access Denied\); S3 keeps their parts until a lifecycle rule"):
        assert shard_stream.abort_stale_uploads(Refusing(), "b/s.zarr/activations/fc/c/0/0") == 0
    assert shard_stream.abort_stale_uploads(Refusing(), "b/s.zarr/activations/fc/c/1/0") == 0   # not tried again
    assert calls == ["list_multipart_uploads"]


def test_a_store_is_read_lazily_from_s3(url):
    values = write_store(url, "zarr")
    with open_store(url) as store:
        assert store.path == url and len(store) == 40
        assert np.array_equal(store["features.0"][[33, 2, 2, 17]], values["features.0"][[33, 2, 2, 17]])
        assert np.array_equal(store["classifier.4"][5:9, [7, 1]], values["classifier.4"][5:9][:, [7, 1]])
        assert np.array_equal(store.flat("features.0")[:, 57], values["features.0"].reshape(40, -1)[:, 57])
        lazy = store.to_dask("features.0", rows=store.select(classes="dog"))
        acts = store.to_xarray("classifier.4")
    assert np.array_equal(lazy.compute(), values["features.0"][14:28])   # read after the store is closed
    assert np.array_equal(acts.values, values["classifier.4"])
    assert acts.coords["class_name"].values[[0, 14, 28]].tolist() == ["cat", "dog", "zebra"]


def test_to_dask_of_an_s3_store_runs_on_process_workers(url):
    values = write_store(url, "zarr")
    with open_store(url) as store:
        lazy = store.to_dask("features.0", chunks=(8, 6, 5, 4))
    total = lazy.sum(axis=(1, 2, 3)).compute(scheduler="processes", num_workers=2)
    assert np.allclose(total, values["features.0"].sum(axis=(1, 2, 3), dtype=np.float64), rtol=1e-6)


def test_a_store_made_elsewhere_is_seen_despite_cached_listings(url):
    s3, folder = fsspec.filesystem("s3"), url[len("s3://"):].rpartition("/")[0]
    s3.pipe(f"{folder}/notes.txt", b"")
    assert s3.ls(folder) == [f"{folder}/notes.txt"]   # fsspec now caches this listing
    write_store(url, "zarr")                           # zarr writes through another filesystem instance
    assert exists(url) and is_store(url)
    with open_store(url) as store:
        assert len(store) == 40
    remove_store(url)
    assert not exists(url) and not is_store(url)
    with pytest.raises(UserError, match="does not exist"):
        open_store(url)


def test_overwrite_replaces_an_s3_store_from_another_run(url, image_dir, weights_file, local):
    write_store(url, "zarr")
    weights = weights_file("alexnet")
    with pytest.raises(UserError, match="holds a store from a different run"):
        extract(model_name="alexnet", model_path=weights, in_path=image_dir, out_path=url, **RUN)
    extract(model_name="alexnet", model_path=weights, in_path=image_dir, out_path=url, overwrite=True, **RUN)
    assert_same(url, local)


def test_overwrite_never_deletes_an_s3_prefix_that_is_not_a_store(url, image_dir, weights_file):
    s3, key = fsspec.filesystem("s3"), url[len("s3://"):]
    s3.pipe(f"{key}/notes.txt", b"mine")
    with pytest.raises(UserError, match="is not an actstore store"):
        extract(model_name="alexnet", model_path=weights_file("alexnet"), in_path=image_dir,
                out_path=url, overwrite=True, **RUN)
    assert s3.cat(f"{key}/notes.txt") == b"mine"


def test_hdf5_stores_must_be_local(s3_env, image_dir, weights_file):
    with pytest.raises(UserError, match="hdf5 stores must be local files"):
        extract(model_name="alexnet", model_path=weights_file("alexnet"), in_path=image_dir,
                out_path=f"s3://{BUCKET}/x.h5", **RUN)


def invoke(*args: str):
    from actstore.cli import app
    return CliRunner().invoke(app, list(args))


def test_extract_info_and_verify_commands_take_a_url(url, image_dir, weights_file, local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # a CLI that took the URL for a local path would write here
    common = ["--model-name", "alexnet", "--model-path", str(weights_file("alexnet")), "--in-path",
              str(image_dir), "--out-path", url, "--batch-size", "4", "--chunk-images", "4",
              "--num-workers", "0", "-q", *[arg for layer in LAYERS for arg in ("--module-name", layer)]]
    write_store(url, "zarr")
    done = invoke("extract", *common, "--overwrite")
    assert done.exit_code == 0, done.output
    assert_same(url, local)
    shown = invoke("info", url)
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"{url}  [zarr]  status: complete  rows: 12/12  classes: 3")
    assert "  features.2: (12, 64, 27, 27) (image, channel, height, width) chunks (4, 64, 27, 27)" in shown.output
    checked = invoke("verify", url)
    assert checked.exit_code == 0, checked.output
    assert checked.output.splitlines()[:2] == ["ok   schema: attributes match the schemas",
                                               "ok   rows written: 12/12 rows written, status complete"]


def test_rechunk_export_and_import_legacy_take_urls(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # a CLI that took a URL for a local path would write here
    values = write_store(url, "zarr")
    before = read_all(url)
    units = url.replace("store.zarr", "units.zarr")
    done = invoke("rechunk", url, units, "--layout", "unit-major")
    assert done.exit_code == 0, done.output
    assert_same(units, before)
    with open_store(units) as store:
        assert store.attrs["rechunked_from"] == url
        assert store["features.0"].chunks[0] == 40        # all rows of a few channels per chunk
    done = invoke("export", units, "--module-name", "classifier.4", "--file-format", "npy",
                  "--out-path", str(tmp_path / "legacy"))
    assert done.exit_code == 0, done.output
    (folder,) = (tmp_path / "legacy").glob("*/classifier.4")
    back = url.replace("store.zarr", "imported.zarr")
    done = invoke("import-legacy", str(folder), "--out-path", back)
    assert done.exit_code == 0, done.output
    with open_store(back) as store:
        assert store.complete and np.array_equal(store["classifier.4"][:], values["classifier.4"])
        assert list(store.file_names) == list(before["file_names"])
    assert not list(tmp_path.glob("s3*"))


def test_a_live_writers_lease_refuses_a_second_writer_and_a_dead_ones_does_not(url, image_dir, weights_file,
                                                                                 local):
    import json as _json
    import socket as _socket

    from actstore.errors import StoreBusyError
    from actstore.store.io import lock

    fs = fsspec.filesystem("s3")
    lease = url.rsplit("/", 1)[0] + "/.store.zarr.0-of-1.lease"
    run = dict(model_name="alexnet", model_path=weights_file("alexnet"), in_path=image_dir, out_path=url, **RUN)
    with lock.acquire(url):
        held = _json.loads(fs.cat_file(lease))
        assert (held["host"], held["pid"]) == (_socket.gethostname(), os.getpid())
        with pytest.raises(StoreBusyError, match=rf"^{url} is being written by another process \(host "
                                                 rf"{_socket.gethostname()}, pid {os.getpid()}, since "):
            extract(**run)
    assert not fs.exists(lease)   # released: removed
    # Another host's writer, alive (fresh heartbeat) and then dead (heartbeat too old).
    other = {"host": "elsewhere", "pid": 1, "since": "2026-01-01T00:00:00+00:00", "token": "x"}
    fs.pipe_file(lease, _json.dumps({**other, "heartbeat": time.time()}).encode())
    with pytest.raises(StoreBusyError, match=r"\(host elsewhere, pid 1, since 2026-01-01T00:00:00\+00:00\): wait "
                                             r"for it to finish, or stop it and run this again to resume$"):
        extract(**run)
    fs.pipe_file(lease, _json.dumps({**other, "heartbeat": time.time() - lock.LEASE_SECONDS - 1}).encode())
    assert extract(**run).complete
    assert_same(url, local)
    # This host's writer killed with -9: its pid is gone, so its lease is taken over at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fs.pipe_file(lease, _json.dumps({**other, "host": _socket.gethostname(), "pid": dead.pid,
                                     "heartbeat": time.time()}).encode())
    with lock.acquire(url):
        assert _json.loads(fs.cat_file(lease))["pid"] == os.getpid()
    assert not fs.exists(lease)


def test_verify_names_the_rows_of_an_object_deleted_from_s3(url):
    from actstore.verify import verify

    write_store(url, "zarr")            # 40 rows, chunks of 8 images and 4 of 6 channels
    fsspec.filesystem("s3").rm_file(f"{url}/activations/features.0/c/2/1/0/0")   # rows 16-23, channels 4-5
    failed = {c.name: c.detail for c in verify(url).checks if not c.ok}
    assert failed["chunks present"] == ("features.0 rows 16-23 have no stored chunk (lost): run the extract "
                                        "command again to recompute them, or restore the files")
