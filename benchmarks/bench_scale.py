"""ImageNet-scale stores without the images: file count, write rate and reads
of a 1,281,167-row store, sharded (the default) against one file per chunk.

Rows go through the real path of a run: ``create_writer`` with the layout
``extract`` chooses, and the extractor's row buffer, fed batches of 256 rows
(a writer thread does exactly this). Activations are synthetic but
ReLU-like, so they compress as real ones do: ``max(x - 0.3, 0)`` of
Gaussian noise (62% exact zeros), in float32, for two layers sized so that
the store fits this machine's disk:

- ``fc``: 512 units (2 KB per image, a ResNet-18 ``avgpool`` / ViT-S token);
- ``conv``: 16x8x8 (4 KB per image, a small conv map).

``--wide`` writes ResNet-50's ``layer1``-``layer4`` shapes instead (256x56x56,
512x28x28, 1024x14x14, 2048x7x7: 6 MB per image), whose shards are streamed
(their rows per shard do not shrink with the width), and first prints the
file count of a whole ImageNet store of them, from the layout alone.

Rows are sorted into classes of 1,300 images, as ImageNet's training set.
Reported per layout: files per layer and in all, bytes stored, write MB/s
(raw bytes over wall time, the data generation excluded), ``open_store``
time, and three reads: 100 random rows of both layers, one class (1,300
rows) of both layers, and one unit (``fc``) / one channel (``conv``) across
all rows. Reads are medians of 3 (a fresh pick and ``open_store`` each
time; the unit read runs once), right after the write, so local reads come
from the page cache: decompression and the reader's work are measured.

    python benchmarks/bench_scale.py                       # 1,281,167 rows, local disk (~12 min on 2 cores)
    python benchmarks/bench_scale.py --rows 100000
    python benchmarks/bench_scale.py --s3 --rows 100000    # against a local moto S3 server (~25 min)
    python benchmarks/bench_scale.py --wide --rows 1000 --shard-rows -1   # ResNet-50 layer1-4 (~6 GB raw)
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import SCRATCH, cpu_name, dir_bytes, remove, table

from actstore.extract.writer_thread import RowBuffer
from actstore.store import (
    FORMAT_NAME,
    LayerSpec,
    Layout,
    choose_chunks,
    choose_shard_rows,
    create_writer,
    open_store,
    writer_class,
)

IMAGENET_ROWS = 1_281_167
CLASS_ROWS = 1300
BATCH = 256
SHAPES = {"fc": (512,), "conv": (16, 8, 8)}
WIDE = {"layer1": (256, 56, 56), "layer2": (512, 28, 28), "layer3": (1024, 14, 14), "layer4": (2048, 7, 7)}
POOL_ROWS = 8192      # generated once and cycled (with a per-batch shift): generation is not what is timed
POOL_BYTES = 2**30    # at most this much of it


def layout(rows: int, shard_rows: int | None) -> Layout:
    specs = tuple(LayerSpec(name, shape, shape, "float32", choose_chunks(shape, 4, 16))
                  for name, shape in SHAPES.items())
    return Layout(n_rows=rows, layers=specs, chunk_images=16,
                  shard_rows=choose_shard_rows("zarr", specs, rows, 16, shard_rows))


def pool(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = min(POOL_ROWS, POOL_BYTES // (4 * sum(int(np.prod(s)) for s in SHAPES.values())))
    return {name: np.maximum(rng.standard_normal((rows, *shape), dtype=np.float32) - 0.3, 0)
            for name, shape in SHAPES.items()}


def write(path: str, rows: int, shard_rows: int | None, source: dict[str, np.ndarray]) -> tuple[float, Layout]:
    """Write ``rows`` rows; returns the seconds spent in the writer."""
    lay = layout(rows, shard_rows)
    targets = np.arange(rows) // CLASS_ROWS
    writer = create_writer(path, "zarr", lay, [f"n{t:08d}/img_{i:07d}.JPEG" for i, t in enumerate(targets)],
                           targets, [f"n{t:08d}" for t in range(targets[-1] + 1)],
                           {"format": FORMAT_NAME, "model_name": "synthetic", "status": "incomplete"})
    buffer = RowBuffer(writer.stream_rows or writer.block_rows or lay.block_rows, rows)
    seconds, batch_rows = 0.0, min(BATCH, len(next(iter(source.values()))) // 2)
    for k, start in enumerate(range(0, rows, batch_rows)):
        stop = min(start + batch_rows, rows)
        offset = (k * 97) % (len(next(iter(source.values()))) - batch_rows)
        batch = {name: np.roll(v[offset:offset + stop - start], k, axis=-1) for name, v in source.items()}
        began = time.perf_counter()
        for block_start, block in buffer.add(np.arange(start, stop), batch):
            writer.write_rows(block_start, block)
        buffer.own()
        seconds += time.perf_counter() - began
    began = time.perf_counter()
    for block_start, block in buffer.flush():
        writer.write_rows(block_start, block)
    writer.update_attrs({"status": "complete"})
    writer.close()
    return seconds + time.perf_counter() - began, lay


def reads(path: str, rng: np.random.Generator, repeats: int = 3) -> dict[str, float]:
    """Medians over ``repeats`` (a fresh pick each time) of open_store, 100
    random rows and one class; one unit across all rows is read once."""
    timings: dict[str, list[float]] = {}

    def timed(label: str, read) -> None:
        began = time.perf_counter()
        read()
        timings.setdefault(label, []).append(time.perf_counter() - began)

    for repeat in range(repeats):
        began = time.perf_counter()
        store = open_store(path)
        timings.setdefault("open_store", []).append(time.perf_counter() - began)
        with store:
            picks = np.sort(rng.choice(len(store), min(100, len(store)), replace=False))
            klass = store.classes[int(rng.integers(len(store.classes)))]
            timed("100 random rows", lambda: [store[name][picks] for name in SHAPES])
            timed("1 class", lambda: [store[name][store.select(classes=[klass])] for name in SHAPES])
            if repeat == 0:
                timed("1 unit, all rows", lambda: [store[name][:, int(rng.integers(shape[0]))]
                                                   for name, shape in SHAPES.items()])
    return {label: float(np.median(t)) for label, t in timings.items()}


def files_of(path: str) -> dict[str, int]:
    with open_store(path) as store:
        return {name: layer["files"] for name, layer in store.summary()["layers"].items()}


def s3_server():
    """A local moto S3 server with a bucket, configured for fsspec (as tests/test_s3.py)."""
    import socket

    import fsspec
    from moto.server import ThreadedMotoServer
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    fsspec.config.conf["s3"] = {"endpoint_url": f"http://127.0.0.1:{port}"}
    fsspec.filesystem("s3").mkdir("bench")
    return server


def print_file_counts() -> None:
    """Files of a whole ImageNet store of the layers, from the layout alone
    (what ``extract --dry-run`` reports), next to shards of one chunk row
    (what a 64 MiB whole-shard buffer allowed ``layer1``)."""
    count = writer_class("zarr").file_count
    rows = [[label, f"{lay.shard_rows}", f"{count(lay):,}"]
            for label, lay in (("shards of one chunk row", layout(IMAGENET_ROWS, 16)),
                               ("default (streamed shards)", layout(IMAGENET_ROWS, None)),
                               ("unsharded", layout(IMAGENET_ROWS, 0)))]
    print(f"{IMAGENET_ROWS:,} rows of {', '.join(SHAPES)}: files of the whole store")
    print(table(rows, ["layout", "rows per shard", "files"]))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=IMAGENET_ROWS)
    parser.add_argument("--s3", action="store_true", help="write to a local moto S3 server instead of disk")
    parser.add_argument("--shard-rows", type=int, nargs="*", default=[-1, 0],
                        help="layouts to run: -1 the default shard rows, 0 unsharded, N shards of N rows")
    parser.add_argument("--wide", action="store_true", help="ResNet-50 layer1-layer4 instead of fc and conv")
    args = parser.parse_args()
    if args.wide:
        SHAPES.clear()
        SHAPES.update(WIDE)
        print_file_counts()
    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = s3_server() if args.s3 else None
    source = pool()
    raw = args.rows * sum(4 * int(np.prod(s)) for s in SHAPES.values())
    results = []
    for shard_rows in args.shard_rows:
        requested = None if shard_rows < 0 else shard_rows
        name = f"scale-{args.rows}-{shard_rows}.zarr"
        path = f"s3://bench/{name}" if args.s3 else str(SCRATCH / name)
        if not args.s3:
            SCRATCH.mkdir(parents=True, exist_ok=True)
            remove(path)
        seconds, lay = write(path, args.rows, requested, source)
        files = files_of(path)
        if args.s3:
            import fsspec
            fs = fsspec.filesystem("s3")
            stored = sum(fs.du(path.removeprefix("s3://"), total=False).values())
            total_files = len(fs.find(path.removeprefix("s3://")))
        else:
            stored = dir_bytes(path)
            total_files = sum(len(f) for _, _, f in os.walk(path))
        timing = reads(path, np.random.default_rng(0))
        label = f"sharded ({lay.shard_rows} rows)" if lay.shard_rows else "unsharded (16-row chunks)"
        results.append([label, *(f"{files[name]:,}" for name in SHAPES), f"{total_files:,}",
                        f"{stored / 1e9:.2f} GB", f"{raw / 1e6 / seconds:,.0f}",
                        *(f"{timing[k]:.2f}"
                          for k in ("open_store", "100 random rows", "1 class", "1 unit, all rows"))])
        print(" | ".join(results[-1]), flush=True)
        if not args.s3:
            remove(path)
    if server is not None:
        server.stop()
    print()
    print(f"{args.rows:,} rows ({raw / 1e9:.1f} GB raw) to {'a local moto S3 server' if args.s3 else 'local disk'}; "
          f"{cpu_name()}, {os.cpu_count()} cores; seconds unless noted")
    print(table(results, ["layout", *(f"files {name}" for name in SHAPES), "files total", "stored", "write MB/s",
                          "open_store", "100 random rows", "1 class", "1 unit, all rows"]))


if __name__ == "__main__":
    main()
