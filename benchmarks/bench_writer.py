"""Writer throughput per format and codec against np.save (issue: throughput).

Activations are real: AlexNet (random weights) run on generated photographs,
captured at two ReLU layers (many exact zeros) and a linear layer with its
ReLU. Each is written through ``actstore.store.create_writer`` +
``write_rows`` in chunk-aligned blocks of 64 rows, as the extractor's
background writer does, and with ``np.save`` to the same disk. MB/s are of
raw float32 activations; both sides write into the page cache (no fsync), and
``os.sync()`` runs before each timed write so that one run's writeback does
not land in the next. Repeats are interleaved; the table shows medians.

    python benchmarks/bench_writer.py            # 192 images, 3 repeats (~3 min on 2 cores)
    python benchmarks/bench_writer.py --small    # 64 images, 2 repeats
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
import warnings

from _common import (SCRATCH, dir_bytes, machine, make_images, median, remove, spread, table)

import numpy as np
import torch

from actstore import Extractor, load_model
from actstore.images import ImageSet
from actstore.store import COMPRESSIONS, LayerSpec, Layout, choose_chunks, create_writer

MODULES = {"features.1": "ReLU", "features.4": "ReLU", "classifier.4": "Linear",
           "classifier.5": "ReLU"}
FORMATS = {"zarr": ".zarr", "hdf5": ".h5"}
BLOCK_ROWS = 64        # the extractor's default batch: 4 chunks of 16 rows
LINEAR_REPEAT = 8      # a linear layer is 16 KB/image: tile it so a write lasts long enough to time


def activations(n: int) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("alexnet", weights="none")
    images = ImageSet.scan(make_images(n, size=256))
    extractor = Extractor(model.module, list(MODULES))
    parts: dict[str, list] = {name: [] for name in MODULES}
    for start in range(0, n, BLOCK_ROWS):
        batch = torch.stack([model.transform(images.load(i)) for i in range(start, min(n, start + BLOCK_ROWS))])
        for name, out in extractor(batch).items():
            parts[name].append(out.numpy())
    acts = {name: np.concatenate(p) for name, p in parts.items()}
    for name in ("classifier.4", "classifier.5"):
        acts[name] = np.concatenate([acts[name]] * LINEAR_REPEAT)
    return acts


def write_store(path, file_format: str, codec: str, name: str, data: np.ndarray) -> float:
    n, shape = len(data), data.shape[1:]
    spec = LayerSpec(module_name=name, shape=shape, native_shape=shape, dtype="float32",
                     chunks=choose_chunks(shape, 4, 16))
    layout = Layout(n_rows=n, layers=(spec,), compression=codec)
    names = [f"img_{i:05d}.jpg" for i in range(n)]
    os.sync()
    started = time.perf_counter()
    writer = create_writer(path, file_format, layout, names, [0] * n, [], {"format": "actstore"})
    for start in range(0, n, BLOCK_ROWS):
        writer.write_rows(start, {name: data[start:start + BLOCK_ROWS]})
    writer.close()
    return time.perf_counter() - started


def write_npy(path, data: np.ndarray) -> float:
    os.sync()
    started = time.perf_counter()
    np.save(path, data)
    return time.perf_counter() - started


def codec_settings(name: str, data: np.ndarray) -> list[list]:
    """Blosc settings the default could take, timed on the layer's own chunks
    with one compression thread (the other core runs the model)."""
    import numcodecs
    from numcodecs import Blosc
    numcodecs.blosc.set_nthreads(1)
    chunks = choose_chunks(data.shape[1:], 4, 16)
    block = np.ascontiguousarray(data[:64, :chunks[1]])
    rows = []
    for cname, level, shuffle in [("zstd", 3, Blosc.SHUFFLE), ("zstd", 1, Blosc.SHUFFLE),
                                  ("zstd", 1, Blosc.BITSHUFFLE), ("lz4", 5, Blosc.SHUFFLE),
                                  ("lz4", 5, Blosc.BITSHUFFLE)]:
        codec = Blosc(cname=cname, clevel=level, shuffle=shuffle)
        best, size = float("inf"), 0
        for _ in range(3):
            started = time.perf_counter()
            size = sum(len(codec.encode(np.ascontiguousarray(block[i:i + 16]))) for i in range(0, 64, 16))
            best = min(best, time.perf_counter() - started)
        rows.append([name, f"blosc {cname} {level} {'bit' if shuffle == Blosc.BITSHUFFLE else 'byte'}shuffle",
                     f"{block.nbytes / best / 1e6:,.0f}", f"{block.nbytes / size:.2f}"])
    numcodecs.blosc.set_nthreads(os.cpu_count() or 1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="64 images, 2 repeats: a quick check")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n = args.images or (64 if args.small else 192)
    repeats = args.repeats or (2 if args.small else 3)
    out_dir = SCRATCH / "writer"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"disk: {out_dir} ; blocks of {BLOCK_ROWS} rows ; {repeats} interleaved repeats\n")

    acts = activations(n)
    rows, verdicts = [], []
    for name, data in acts.items():
        variants = [("npy", "-")] + [(f, c) for f in FORMATS for c in COMPRESSIONS]
        times = {v: [] for v in variants}
        sizes = {}
        for _ in range(repeats):
            for file_format, codec in variants:
                if file_format == "npy":
                    path = out_dir / "acts.npy"
                    remove(path)
                    times[(file_format, codec)].append(write_npy(path, data))
                else:
                    path = out_dir / f"acts-{codec}{FORMATS[file_format]}"
                    remove(path)
                    times[(file_format, codec)].append(write_store(path, file_format, codec, name, data))
                sizes[(file_format, codec)] = dir_bytes(path)
                remove(path)
        zeros = float(np.mean(data == 0))
        npy_rate = data.nbytes / median(times[("npy", "-")]) / 1e6
        for variant in variants:
            rate = data.nbytes / median(times[variant]) / 1e6
            rows.append([name, MODULES[name], f"{data.shape[0]}x{'x'.join(map(str, data.shape[1:]))}",
                         f"{100 * zeros:.0f}%", *variant, f"{rate:,.0f}", f"{rate / npy_rate:.2f}",
                         spread(times[variant]), f"{data.nbytes / sizes[variant]:.2f}"])
            if variant[1] == "zstd" and MODULES[name] == "ReLU":
                ratio = data.nbytes / sizes[variant]
                met = rate >= npy_rate and ratio >= 2
                verdicts.append(f"{name} {variant[0]} zstd: {rate:,.0f} MB/s vs np.save {npy_rate:,.0f} MB/s, "
                                f"raw/stored {ratio:.2f} -> target {'MET' if met else 'MISSED'}")
        print(table(rows[-len(variants):], HEADER), "\n", flush=True)
    print("all layers:\n")
    print(table(rows, HEADER))
    print("\ntarget (default codec keeps up with np.save, stores at most half the bytes on ReLU layers):")
    print("\n".join(verdicts))
    settings = [row for name, data in acts.items() if MODULES[name] == "ReLU"
                for row in codec_settings(name, data)]
    print("\ncodec settings on the ReLU layers (one thread, best of 3, 4 chunks):\n")
    print(table(settings, ["layer", "codec", "MB/s", "raw/stored"]))
    shutil.rmtree(out_dir, ignore_errors=True)


HEADER = ["layer", "type", "rows x shape", "zeros", "format", "codec", "MB/s", "vs np.save",
          "spread", "raw/stored"]

if __name__ == "__main__":
    main()
