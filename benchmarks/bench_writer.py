"""Writer throughput per format and codec against np.save (issue: throughput).

Activations are real: AlexNet (random weights) run on generated photographs,
captured at two ReLU layers (many exact zeros) and a linear layer with its
ReLU. Each is written through ``actstore.store.create_writer`` +
``write_rows`` in chunk-aligned blocks of 64 rows, as the extractor's
background writer does, and with ``np.save`` to the same disk. MB/s are of
raw float32 activations, measured twice for every write:

- "page cache": until the writer returns. np.save is then a memory copy into
  the kernel's cache; a store far beyond RAM cannot stay there.
- "on disk": until ``os.sync()`` after it has returned, i.e. until the bytes
  are on the disk: the rate a long extraction sustains once the kernel's
  dirty-page limit is reached.

``os.sync()`` also runs before each timed write, so one run's writeback does
not land in the next. Repeats are interleaved; the table shows medians.

    python benchmarks/bench_writer.py            # 192 images, 3 repeats (~3 min on 2 cores)
    python benchmarks/bench_writer.py --small    # 64 images, 2 repeats
    python benchmarks/bench_writer.py --vit      # dense transformer layers instead (needs timm)

``--checksum`` measures what the chunk checksums cost (Zarr's crc32c codec,
HDF5's Fletcher-32 after Blosc or none; HDF5 gzip has none to add, deflate
carries Adler-32): each format x codec written with and without them, side
by side, interleaved, until the writer returns (page cache).

    python benchmarks/bench_writer.py --checksum --small

``--vit`` takes the activations from timm's ``vit_small_patch16_224`` (random
weights: no trained weights can be downloaded here): token hidden states
(197 x 384 per image) after blocks 5 and 11, the GELU inside block 5's MLP,
and the pooled embedding. They have no ReLU zeros: the question is what the
default codec gains on them, and at what speed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
import warnings

import numpy as np
import torch
from _common import SCRATCH, dir_bytes, machine, make_images, median, remove, spread, table

from actstore import Extractor, load_model
from actstore.images import ImageSet
from actstore.store import COMPRESSIONS, LayerSpec, Layout, choose_chunks, create_writer, writer_class
from actstore.store.codecs import BLOSC_BLOCK_BYTES

MODELS = {  # source, model, {layer: type}
    "alexnet": ("torchvision", "alexnet", {"features.1": "ReLU", "features.4": "ReLU", "classifier.4": "Linear",
                                           "classifier.5": "ReLU"}),
    "vit": ("timm", "vit_small_patch16_224", {"blocks.5": "Block", "blocks.11": "Block",
                                              "blocks.5.mlp.act": "GELU", "embedding": "pre-logits"}),
}
MODULES: dict[str, str] = dict(MODELS["alexnet"][2])
FORMATS = {"zarr": ".zarr", "hdf5": ".h5"}
BLOCK_ROWS = 64        # the extractor's default batch: 4 chunks of 16 rows
LINEAR_REPEAT = 8      # a linear layer is 16 KB/image: tile it so a write lasts long enough to time


def activations(n: int, which: str = "alexnet") -> dict[str, np.ndarray]:
    source, model_name, modules = MODELS[which]
    MODULES.clear()
    MODULES.update(modules)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(model_name, source=source, weights="none")
    images = ImageSet.scan(make_images(n, size=256))
    extractor = Extractor(model, list(MODULES))
    parts: dict[str, list] = {name: [] for name in MODULES}
    for start in range(0, n, BLOCK_ROWS):
        batch = torch.stack([model.transform(images.load(i)) for i in range(start, min(n, start + BLOCK_ROWS))])
        for name, out in extractor(batch).items():
            parts[name].append(out.numpy())
    acts = {name: np.concatenate(p) for name, p in parts.items()}
    for name in acts:
        if acts[name].ndim == 2:
            acts[name] = np.concatenate([acts[name]] * LINEAR_REPEAT)
    return acts


def write_store(path, file_format: str, codec: str, name: str, data: np.ndarray) -> tuple[float, float]:
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
    return _and_on_disk(started)


def write_npy(path, data: np.ndarray) -> tuple[float, float]:
    os.sync()
    started = time.perf_counter()
    np.save(path, data)
    return _and_on_disk(started)


def _and_on_disk(started: float) -> tuple[float, float]:
    """Seconds until the writer returned, and until its bytes were on disk."""
    returned = time.perf_counter() - started
    os.sync()
    return returned, time.perf_counter() - started


def codec_settings(name: str, data: np.ndarray) -> list[list]:
    """Settings the defaults could take, timed on the layer's own chunks with
    one thread (the other core runs the model): compression and decompression
    MB/s and the ratio. Blosc: "auto" blocks are Blosc's own choice (tens of
    KiB); "chunk" makes each chunk one block (actstore's default for Zarr).
    Deflate: HDF5's shuffle + deflate pipeline at each level, by the
    implementation actstore uses (``actstore.store.deflate``: ISA-L for
    levels 1-3 where installed; benchmarks/bench_codecs.py compares them)."""
    import zlib

    from numcodecs import Blosc, Shuffle

    from actstore.store import deflate
    chunks = choose_chunks(data.shape[1:], 4, 16)
    pieces = [np.ascontiguousarray(data[i:i + 16, :chunks[1]]) for i in range(0, 64, 16)]
    raw = sum(p.nbytes for p in pieces)
    rows = []
    for cname, level, shuffle, blocksize in [
            ("zstd", 3, Blosc.SHUFFLE, 0), ("zstd", 1, Blosc.SHUFFLE, 0),
            ("zstd", 1, Blosc.SHUFFLE, BLOSC_BLOCK_BYTES), ("zstd", 1, Blosc.BITSHUFFLE, BLOSC_BLOCK_BYTES),
            ("lz4", 5, Blosc.SHUFFLE, 0), ("lz4", 5, Blosc.SHUFFLE, BLOSC_BLOCK_BYTES),
            ("lz4", 5, Blosc.BITSHUFFLE, BLOSC_BLOCK_BYTES)]:
        codec = Blosc(cname=cname, clevel=level, shuffle=shuffle, blocksize=blocksize)
        encoded = [codec.encode(p) for p in pieces]
        encode = decode = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for piece in pieces:
                codec.encode(piece)
            encode = min(encode, time.perf_counter() - started)
            started = time.perf_counter()
            for blob in encoded:
                codec.decode(blob)
            decode = min(decode, time.perf_counter() - started)
        rows.append([name, f"blosc {cname} {level} {'bit' if shuffle == Blosc.BITSHUFFLE else 'byte'}shuffle, "
                           f"{'chunk' if blocksize else 'auto'} blocks",
                     f"{raw / encode / 1e6:,.0f}", f"{raw / decode / 1e6:,.0f}",
                     f"{raw / sum(len(b) for b in encoded):.2f}"])
    for level in (1, 2, 4, 6):
        shuffle = Shuffle(elementsize=4)
        encoded = [deflate.zlib_stream(shuffle.encode(p), level) for p in pieces]
        encode = decode = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for piece in pieces:
                deflate.zlib_stream(shuffle.encode(piece), level)
            encode = min(encode, time.perf_counter() - started)
            started = time.perf_counter()
            for blob in encoded:
                shuffle.decode(zlib.decompress(blob))
            decode = min(decode, time.perf_counter() - started)
        impl = deflate.IMPLEMENTATION if level in deflate.ISAL_LEVELS else "zlib"
        rows.append([name, f"shuffle + deflate {level} (HDF5 gzip, {impl})", f"{raw / encode / 1e6:,.0f}",
                     f"{raw / decode / 1e6:,.0f}", f"{raw / sum(len(b) for b in encoded):.2f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="64 images, 2 repeats: a quick check")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--vit", action="store_true", help="dense transformer layers (timm ViT-S/16, random weights)")
    parser.add_argument("--checksum", action="store_true", help="only the chunk checksums' write cost")
    args = parser.parse_args()
    n = args.images or (64 if args.small else 192)
    repeats = args.repeats or (2 if args.small else 3)
    out_dir = SCRATCH / "writer"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"disk: {out_dir} ; blocks of {BLOCK_ROWS} rows ; {repeats} interleaved repeats\n")

    acts = activations(n, "vit" if args.vit else "alexnet")
    if args.checksum:
        checksum_cost(acts, out_dir, max(repeats, 5))
        return
    rows, verdicts = [], []
    for name, data in acts.items():
        variants = [("npy", "-")] + [(f, c) for f in FORMATS for c in COMPRESSIONS]
        times = {v: [] for v in variants}
        disk = {v: [] for v in variants}
        sizes = {}
        for _ in range(repeats):
            for file_format, codec in variants:
                if file_format == "npy":
                    path = out_dir / "acts.npy"
                    remove(path)
                    seconds = write_npy(path, data)
                else:
                    path = out_dir / f"acts-{codec}{FORMATS[file_format]}"
                    remove(path)
                    seconds = write_store(path, file_format, codec, name, data)
                times[(file_format, codec)].append(seconds[0])
                disk[(file_format, codec)].append(seconds[1])
                sizes[(file_format, codec)] = dir_bytes(path)
                remove(path)
        zeros = float(np.mean(data == 0))
        npy_rate = data.nbytes / median(times[("npy", "-")]) / 1e6
        npy_disk = data.nbytes / median(disk[("npy", "-")]) / 1e6
        for variant in variants:
            rate = data.nbytes / median(times[variant]) / 1e6
            on_disk = data.nbytes / median(disk[variant]) / 1e6
            rows.append([name, MODULES[name], f"{data.shape[0]}x{'x'.join(map(str, data.shape[1:]))}",
                         f"{100 * zeros:.0f}%", *variant, f"{rate:,.0f}", f"{rate / npy_rate:.2f}",
                         f"{on_disk:,.0f}", f"{on_disk / npy_disk:.2f}",
                         f"{spread(times[variant])} / {spread(disk[variant])}",
                         f"{data.nbytes / sizes[variant]:.2f}"])
            if variant[0] in FORMATS and variant[1] == writer_class(variant[0]).default_compression \
                    and MODULES[name] == "ReLU":
                ratio = data.nbytes / sizes[variant]
                verdicts.append(
                    f"{name} {variant[0]} {variant[1]}: raw/stored {ratio:.2f}; "
                    f"page cache {rate:,.0f} vs np.save {npy_rate:,.0f} MB/s "
                    f"({'MET' if rate >= npy_rate and ratio >= 2 else 'MISSED'}); "
                    f"on disk {on_disk:,.0f} vs {npy_disk:,.0f} MB/s "
                    f"({'MET' if on_disk >= npy_disk and ratio >= 2 else 'MISSED'})")
        print(table(rows[-len(variants):], HEADER), "\n", flush=True)
    print("all layers:\n")
    print(table(rows, HEADER))
    print("\ntarget (default codec keeps up with np.save, stores at most half the bytes on ReLU layers):")
    print("\n".join(verdicts))
    settings = [row for name, data in acts.items() if MODULES[name] != "Linear"
                for row in codec_settings(name, data)]
    print("\ncodec settings (one thread, best of 3, 4 chunks):\n")
    print(table(settings, ["layer", "codec", "compress MB/s", "decompress MB/s", "raw/stored"]))
    shutil.rmtree(out_dir, ignore_errors=True)


def checksum_cost(acts: dict[str, np.ndarray], out_dir, repeats: int) -> None:
    """Write every layer with and without chunk checksums, interleaved; print
    the medians side by side and the cost over all layers per format x codec."""
    from unittest import mock

    from actstore.store.codecs import CodecSpec
    from actstore.store.layout import Layout as StoreLayout
    without = [mock.patch.object(StoreLayout, "codec", property(   # the arrays stores had before checksums
        lambda self: CodecSpec(self.compression, self.compression_level, checksum=False)))]
    variants = [(f, c) for f in FORMATS for c in COMPRESSIONS if not (f == "hdf5" and c == "gzip")]
    seconds: dict[tuple, list[float]] = {}
    for _ in range(repeats):
        for file_format, codec in variants:
            for checksum in (True, False):
                path = out_dir / f"acts-{codec}{FORMATS[file_format]}"
                total = 0.0
                for name, data in acts.items():
                    remove(path)
                    if checksum:
                        total += write_store(path, file_format, codec, name, data)[0]
                    else:
                        with without[0]:
                            total += write_store(path, file_format, codec, name, data)[0]
                seconds.setdefault((file_format, codec, checksum), []).append(total)
                remove(path)
    raw = sum(data.nbytes for data in acts.values())
    rows = []
    for file_format, codec in variants:
        on, off = median(seconds[(file_format, codec, True)]), median(seconds[(file_format, codec, False)])
        rows.append([file_format, codec, "crc32c" if file_format == "zarr" else "fletcher32",
                     f"{raw / off / 1e6:,.0f}", f"{raw / on / 1e6:,.0f}", f"{100 * (on / off - 1):+.1f}%",
                     f"{spread(seconds[(file_format, codec, False)])} / {spread(seconds[(file_format, codec, True)])}"])
    print(f"chunk checksums: {len(acts)} layers, {raw / 1e6:,.0f} MB raw, whole writes until the writer "
          f"returns, median of {repeats}\n")
    print(table(rows, ["format", "codec", "checksum", "MB/s without", "MB/s with", "write time",
                       "spread without / with"]))
    print("\nthe same chunks encoded on one thread (what the checksum adds to the codec's CPU time; "
          "best of 15):\n")
    print(table(encode_cost(acts, variants), ["format", "codec", "MB/s without", "MB/s with", "encode time"]))


def encode_cost(acts: dict[str, np.ndarray], variants: list[tuple[str, str]]) -> list[list]:
    """Chunks of every layer (up to 32 MB) encoded with and without the
    checksum, one thread, alternately, best of 15: the checksum's CPU cost,
    apart from the disk."""
    from actstore.store.codecs import CodecSpec
    chunks = [np.ascontiguousarray(data[start:start + 16, :choose_chunks(data.shape[1:], 4, 16)[1]])
              for data in acts.values() for start in range(0, min(len(data), 128), 16)]
    while sum(c.nbytes for c in chunks) > 32e6:
        chunks = chunks[::2]
    raw = sum(c.nbytes for c in chunks)
    rows = []
    for file_format, codec in variants:
        encoders = {checksum: CodecSpec(codec, checksum=checksum).encoder(file_format) for checksum in (True, False)}
        best = {True: float("inf"), False: float("inf")}
        for _ in range(15):
            for checksum, encode in encoders.items():
                started = time.perf_counter()
                for chunk in chunks:
                    encode(chunk)
                best[checksum] = min(best[checksum], time.perf_counter() - started)
        rows.append([file_format, codec, f"{raw / best[False] / 1e6:,.0f}", f"{raw / best[True] / 1e6:,.0f}",
                     f"{100 * (best[True] / best[False] - 1):+.1f}%"])
    return rows


HEADER = ["layer", "type", "rows x shape", "zeros", "format", "codec", "MB/s page cache", "vs np.save",
          "MB/s on disk", "vs np.save", "spread cache / disk", "raw/stored"]

if __name__ == "__main__":
    main()
