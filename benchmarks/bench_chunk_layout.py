"""Read time of the three analysis read patterns under several chunk layouts
(issue: analysis over stores far larger than RAM, item 4).

Activations are real: ``actstore.extract`` runs AlexNet (random weights) on
generated photographs sorted into 16 class folders, capturing a conv layer
after its ReLU (``features.4``, 192x27x27) and a linear layer after its
ReLU (``classifier.5``, 4096). Each layer is then written once per layout
and format (zstd level 3, the default codec) and read through
``open_store`` three ways:

- ``64 images``: 64 random rows, every unit (``store[layer][rows]``);
- ``1 channel``: one channel / unit, every image (``store[layer][:, c]``);
- ``1 class``: every row of one class (``store[layer][store.select(classes=[c])]``).

Zarr is written unsharded (one file per chunk) and sharded (the extract
default: shards of up to 4096 rows, the same inner chunks).

Times are medians over repeats with a different random pick each time,
from the page cache (files just written, so decompression and copying is
what is measured, not the disk).

    python benchmarks/bench_chunk_layout.py             # 2048 images, 5 repeats (~5 min on 2 cores)
    python benchmarks/bench_chunk_layout.py --small     # 256 images, 2 repeats
    python benchmarks/bench_chunk_layout.py --default-only   # the default chunks: Zarr unsharded / sharded, HDF5
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from _common import SCRATCH, cpu_name, dir_bytes, make_images, median, remove, table

from actstore.store import FORMAT_NAME, LayerSpec, Layout, choose_shard_rows, create_writer, open_store
from actstore.store.rechunk import unit_major_chunks

CONV, LINEAR = "features.4", "classifier.5"
N_CLASSES = 16
# Zarr unsharded (one file per chunk), Zarr sharded (the extract default,
# shards of config.SHARD_ROWS rows), HDF5.
FORMATS = {"zarr": ("zarr", ".zarr", 0), "zarr sharded": ("zarr", ".zarr", None), "hdf5": ("hdf5", ".h5", 0)}


def layouts(n: int) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Chunk shapes per layer, the extract default first. Channel counts are
    per chunk; the unit-major rows are what ``actstore rechunk`` picks for a
    store of this size under its default 1 GiB budget (all rows here)."""
    conv, linear = (192, 27, 27), (4096,)
    return {
        CONV: [("16 img x 16 ch (default)", (16, 16, 27, 27)), ("16 img x 192 ch", (16, 192, 27, 27)),
               ("16 img x 64 ch", (16, 64, 27, 27)), ("64 img x 16 ch", (64, 16, 27, 27)),
               ("4 img x 192 ch", (4, 192, 27, 27)),
               ("unit-major", unit_major_chunks(conv, 4, min(n, 1024)))],
        LINEAR: [("16 img x 4096 (default)", (16, 4096)), ("64 img x 4096", (64, 4096)),
                 ("256 img x 4096", (256, 4096)), ("256 img x 256", (256, 256)),
                 ("unit-major", unit_major_chunks(linear, 4, n))],
    }


def class_folders(n: int) -> "os.PathLike":
    """``n`` generated photographs hard-linked into ``N_CLASSES`` class folders."""
    flat = make_images(n, size=256)
    root = SCRATCH / f"classes-{n}"
    if not (root / ".complete").exists():
        for i, image in enumerate(sorted(flat.glob("*.jpg"))):
            folder = root / f"class{i * N_CLASSES // n:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / image.name).exists():
                os.link(image, folder / image.name)
        (root / ".complete").touch()
    return root


def extract_real(n: int) -> tuple[dict[str, np.ndarray], dict]:
    """Run the extractor once and load both layers (and the row metadata)."""
    from actstore import extract
    out = SCRATCH / f"layout-source-{n}.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extract(model_name="alexnet", weights="none", module_names=[CONV, LINEAR],
                in_path=class_folders(n), out_path=out, batch_size=64, num_workers=1,
                quiet=True)   # resumes (nothing to do) when the store is already there
    with open_store(out) as store:
        meta = {"file_names": store.file_names, "targets": store.targets, "classes": store.classes}
        return {name: store[name][:] for name in (CONV, LINEAR)}, meta


def write(path, file_format: str, name: str, data: np.ndarray, chunks: tuple[int, ...], meta: dict,
          shard_rows: int | None = 0) -> None:
    remove(path)
    shape = data.shape[1:]
    spec = LayerSpec(module_name=name, shape=shape, native_shape=shape, dtype="float32", chunks=chunks)
    shard_rows = choose_shard_rows(file_format, [spec], len(data), chunks[0], shard_rows)
    writer = create_writer(path, file_format, Layout(n_rows=len(data), layers=(spec,), chunk_images=chunks[0],
                                                     shard_rows=shard_rows),
                           meta["file_names"], meta["targets"], meta["classes"],
                           {"format": FORMAT_NAME, "status": "complete"})
    unit = shard_rows or chunks[0]
    block = unit * max(1, 256 // unit)
    for start in range(0, len(data), block):
        writer.write_rows(start, {name: data[start:start + block]})
    writer.close()


def time_patterns(path, name: str, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    timings: dict[str, list[float]] = {"64 images": [], "1 channel": [], "1 class": []}
    with open_store(path) as store:
        layer = store[name]
        for _ in range(repeats):
            picks = {"64 images": lambda: layer[np.sort(rng.choice(len(store), 64, replace=False))],
                     "1 channel": lambda: layer[:, int(rng.integers(layer.shape[1]))],
                     "1 class": lambda: layer[store.select(classes=[store.classes[rng.integers(len(store.classes))]])]}
            for pattern, read in picks.items():
                started = time.perf_counter()
                read()
                timings[pattern].append(time.perf_counter() - started)
    return {pattern: median(t) for pattern, t in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="256 images, 2 repeats")
    parser.add_argument("--default-only", action="store_true",
                        help="only the extract default chunks (unsharded and sharded Zarr, HDF5)")
    args = parser.parse_args()
    n, repeats = (256, 2) if args.small else (2048, 5)
    started = time.perf_counter()
    acts, meta = extract_real(n)
    print(f"extracted {n} images in {time.perf_counter() - started:.0f} s on {cpu_name()}, "
          f"{os.cpu_count()} cores")
    rng = np.random.default_rng(0)
    rows = []
    for name, choices in layouts(n).items():
        raw = acts[name].nbytes
        for label, chunks in choices[:1] if args.default_only else choices:
            for label_format, (file_format, suffix, shard_rows) in FORMATS.items():
                path = SCRATCH / f"layout{suffix}"
                write(path, file_format, name, acts[name], chunks, meta, shard_rows)
                ms = time_patterns(path, name, repeats, rng)
                rows.append([name, label, "x".join(map(str, chunks)), label_format,
                             f"{raw / dir_bytes(path):.1f}x",
                             *(f"{1000 * ms[p]:,.0f}" for p in ("64 images", "1 channel", "1 class"))])
                print(" | ".join(rows[-1]), flush=True)
                remove(path)
    print()
    print(f"{n} images, {n // N_CLASSES} per class; {cpu_name()}, {os.cpu_count()} cores; medians of "
          f"{repeats}, ms, from the page cache")
    print(table(rows, ["layer", "layout", "chunk", "format", "ratio", "64 images", "1 channel", "1 class"]))


if __name__ == "__main__":
    main()
