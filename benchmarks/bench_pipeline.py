"""The writer's ceiling without a model: pre-made activation batches through
the real write path, per format, codec and codec threads.

What the CPU side can take per core. Batches of real AlexNet
activations (random weights, generated photographs: bench_writer's layers,
1.35 MB per image) go through what ``extract``'s batch loop does with a
batch after the forward pass: into a reused host batch
(``HostBuffers``), queued to the ``BackgroundWriter``, gathered into blocks
by its ``RowBuffer`` and written by a real store writer (``create_writer``,
``limit_codec_threads``). No decoding, no forward pass: the main thread
feeds as fast as the writer takes, in two ways (``--feeds``): ``copy``, each
batch copied into its host batch by the CPU, as a CPU run's forward hook
does; ``handover``, each batch already in its host batch, as a GPU run's
device-to-host copy leaves it (a DMA into pinned memory that the CPU only
issues): what a GPU user can expect. The host batches are made and touched
once before any timed run, as many as a run keeps in flight: a run of
thousands of images reuses them, and a short timed run would otherwise pay
their first touch (a page fault per 4 KiB: on this benchmark's 0.35-0.7 GB
runs, about one fault per page written, as much CPU as a fast codec on a
virtual machine). Each configuration is timed until the
writer is closed (bytes in the page cache, not yet on disk); every timed
run starts after ``os.sync()``, so no run pays for the write-back of the
runs before it.

Two baselines on the same chunks and the same threads:

- codec alone: the same chunks (the layers' chunk grid, cut beforehand),
  compressed by the format's chunk encoding on a pool of as many threads,
  no I/O;
- uncompressed write: the same batches written with ``ndarray.tofile``,
  one file per layer, to the same disk (one thread).

GB/s are of raw float32 activations; CPU s/GB are this process's CPU seconds
(every thread, user and kernel, ``getrusage``) per GB stored. What the write
path spends beyond the codec is split into the kernel's (system CPU: the page
cache, files, page faults) and the rest (user CPU: copies, Python, threads,
the format). Interleaved repeats, medians.

    python benchmarks/bench_pipeline.py                 # 512 rows (0.7 GB) per run, 2 repeats
    python benchmarks/bench_pipeline.py --rows 512 --repeats 3   # the README's table
    python benchmarks/bench_pipeline.py --rows 256 --repeats 1
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from _common import SCRATCH, dir_bytes, machine, median, remove, table
from bench_writer import activations

from actstore import config
from actstore.extract.buffers import HostBuffers
from actstore.extract.writer_thread import BackgroundWriter
from actstore.store import (
    COMPRESSIONS,
    CodecSpec,
    LayerSpec,
    Layout,
    choose_chunks,
    choose_shard_rows,
    create_writer,
    deflate,
)

FORMATS = {"zarr sharded": ("zarr", ".zarr", None), "zarr unsharded": ("zarr", ".zarr", 0),
           "hdf5": ("hdf5", ".h5", 0)}
# How a batch reaches its host batch (a GPU's device-to-host copy is a DMA the CPU only issues).
FEEDS = {"copy": "each batch copied into a reused host batch, as a CPU run's forward hook does",
         "handover": "each batch already in its host batch, as a GPU run's device-to-host copy leaves it"}
BATCH = config.BATCH_SIZE
TARGET_RATE, TARGET_CPU = 0.8, 1.2   # targets: vs the codec alone, on the same threads


def clock() -> tuple[float, float, float]:
    """Wall seconds, and this process's user and system CPU seconds (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime, usage.ru_stime


def since(start: tuple[float, float, float]) -> tuple[float, float, float]:
    """Wall, user and system seconds since ``start`` (a :func:`clock`)."""
    return tuple(now - then for now, then in zip(clock(), start))


class _NoProgress:
    def update(self, count: int) -> None:
        pass


def layout_of(acts: dict[str, np.ndarray], rows: int, codec: str, shard_rows: int | None) -> Layout:
    specs = tuple(LayerSpec(module_name=name, shape=a.shape[1:], native_shape=a.shape[1:], dtype="float32",
                            chunks=choose_chunks(a.shape[1:], 4, config.CHUNK_IMAGES)) for name, a in acts.items())
    shards = 0 if shard_rows == 0 else choose_shard_rows("zarr", specs, rows, config.CHUNK_IMAGES)
    return Layout(n_rows=rows, layers=specs, compression=codec, shard_rows=shards)


def fill_batch(out, acts: dict[str, np.ndarray], start: int) -> None:
    """Copy rows ``start..start+BATCH`` of the run into host batch ``out``, as
    the forward hook copies its outputs: the pre-made rows, cycled (their
    count is a multiple of BATCH, so every batch is a view)."""
    n = min(len(a) for a in acts.values())
    for name, data in acts.items():
        out.fill(name, torch.from_numpy(data[start % n:start % n + BATCH]))


def warm_host_buffers(acts: dict[str, np.ndarray]) -> HostBuffers:
    """Host batches as many as a run keeps in flight (the write queue's, the
    one being written and the one being filled), each filled once: a run of
    thousands of images reuses them, so a short timed run must not pay for
    their first touch (a page fault per 4 KiB, as much CPU as a fast codec
    here)."""
    host = HostBuffers(torch.device("cpu"), BATCH, "float32", flatten=False)
    batches = [host.take() for _ in range(config.WRITE_QUEUE_BATCHES + 2)]
    for i, out in enumerate(batches):
        fill_batch(out, acts, i * BATCH)   # the pre-made rows in turn, as a run cycles through them
        out.release()
    return host


def pipeline(path, file_format: str, layout: Layout, acts: dict[str, np.ndarray], threads: int,
             host: HostBuffers, feed: str) -> tuple[float, float, float]:
    """Wall, user and system seconds to write ``layout.n_rows`` rows, cycling through
    ``acts``, from the first batch until the writer is closed (the store's
    creation is a run's setup, not part of it; ``host``: warm host batches;
    ``feed``: one of :data:`FEEDS`)."""
    rows = layout.n_rows
    names = [f"img_{i:06d}.jpg" for i in range(rows)]
    keep = np.ones(rows, dtype=bool)
    writer = create_writer(path, file_format, layout, names, [0] * rows, [], {"format": "actstore"})
    writer.limit_codec_threads(threads)
    os.sync()   # every run starts with no dirty pages of the runs before it to write back
    started = clock()
    background = BackgroundWriter(writer, layout.block_rows, rows, _NoProgress())
    for start in range(0, rows, BATCH):
        batch_rows = np.arange(start, start + BATCH)
        out = host.take()
        if feed == "copy":
            fill_batch(out, acts, start)
        elif not out.buffers:   # a batch made now would be empty: every one in flight is made beforehand
            raise RuntimeError("more host batches in flight than warm_host_buffers made")
        background.put(batch_rows, keep[batch_rows], out)
    background.finish()
    writer.close()
    return since(started)


def chunk_encoder(file_format: str, codec: str, layout: Layout):
    """The chunk encoding the format's writer applies (``CodecSpec.encoder``:
    Blosc with the chunk as one block; HDF5 gzip: shuffle + deflate; Zarr
    gzip: a gzip member; none: the chunk's bytes)."""
    return CodecSpec(codec, layout.compression_level).encoder(file_format)


def codec_alone(encode, chunks: list[np.ndarray], repeat: int, threads: int) -> tuple[float, ...]:
    """Wall, user and system seconds, stored and raw bytes, to encode
    ``chunks`` ``repeat`` times on ``threads``."""
    os.sync()
    start = clock()
    with ThreadPoolExecutor(threads) as pool:
        stored = sum(len(p) for p in pool.map(encode, chunks * repeat))
    return *since(start), stored, repeat * sum(c.nbytes for c in chunks)


def grid(acts: dict[str, np.ndarray], layout: Layout) -> list[np.ndarray]:
    """Every whole chunk of the pre-made rows, cut and made contiguous beforehand."""
    out = []
    for spec in layout.layers:
        data = acts[spec.module_name]
        c = spec.chunks
        for r in range(0, len(data) - len(data) % c[0], c[0]):
            for ch in range(0, data.shape[1], c[1]):
                piece = np.zeros(c, np.float32)
                part = data[r:r + c[0], ch:ch + c[1]]
                piece[:, :part.shape[1]] = part
                out.append(piece)
    return out


def feed_only(acts: dict[str, np.ndarray], rows: int, host: HostBuffers) -> tuple[float, float, float]:
    """Wall, user and system seconds of the main thread's part alone: each batch copied
    into a reused host batch, which is released at once (no writer)."""
    started = clock()
    for start in range(0, rows, BATCH):
        out = host.take()
        fill_batch(out, acts, start)
        out.release()
    return since(started)


def tofile(path, acts: dict[str, np.ndarray], rows: int) -> tuple[float, float, float]:
    n = min(len(a) for a in acts.values())
    path.mkdir(parents=True, exist_ok=True)
    os.sync()
    started = clock()
    handles = {name: open(path / f"{name}.raw", "wb") for name in acts}
    for start in range(0, rows, BATCH):
        for name, data in acts.items():
            data[start % n:start % n + min(BATCH, rows - start)].tofile(handles[name])
    for handle in handles.values():
        handle.close()
    return since(started)


def run(acts, rows: int, repeats: int, thread_counts: list[int], formats: list[str], codecs: list[str],
        feeds: list[str]):
    out = SCRATCH / "pipeline"
    out.mkdir(parents=True, exist_ok=True)
    raw = rows * sum(a[0].nbytes for a in acts.values())
    n = min(len(a) for a in acts.values())
    results: dict[tuple, list] = {}
    host = warm_host_buffers(acts)
    for _ in range(repeats):
        path = out / "raw"
        remove(path)
        results.setdefault(("tofile",), []).append((*tofile(path, acts, rows), raw))
        remove(path)
        results.setdefault(("feed",), []).append((*feed_only(acts, rows, host), raw))
        for label in formats:
            file_format, suffix, shard_rows = FORMATS[label]
            for codec in codecs:
                layout = layout_of(acts, rows, codec, shard_rows)
                chunks = grid({k: a[:n] for k, a in acts.items()}, layout)
                for threads in thread_counts:
                    path = out / f"store{suffix}"
                    for feed in feeds:
                        remove(path)
                        results.setdefault((label, codec, threads, feed), []).append(
                            (*pipeline(path, file_format, layout, acts, threads, host, feed), dir_bytes(path)))
                        remove(path)
                    encode = chunk_encoder(file_format, codec, layout)
                    results.setdefault((label, codec, threads, "codec"), []).append(
                        codec_alone(encode, chunks, rows // n, threads))
    return results, raw


def report(results, raw: int, thread_counts: list[int], formats: list[str], codecs: list[str],
           feeds: list[str]) -> None:
    """A table per feed, and the targets. The write path's CPU s per stored
    GB is the process's, less the feed's where the CPU copies (the copy into
    host batches, which a CPU run makes in its forward hook); beyond the
    codec's own (its baseline) it splits into the kernel's (system CPU beyond
    the codec's: the page cache, files, faults) and the rest (user CPU beyond
    the codec's: copies, Python, threads, the format)."""
    gb = raw / 1e9
    t_wall, t_user, t_sys = (median([r[i] for r in results[("tofile",)]]) for i in range(3))
    f_user, f_sys = (median([r[i] for r in results[("feed",)]]) for i in (1, 2))
    print(f"uncompressed ndarray.tofile to the same disk: {gb / t_wall:.2f} GB/s, "
          f"{(t_user + t_sys) / gb:.2f} CPU s/GB ({t_sys / gb:.2f} of it the kernel's); "
          f"the copy into host batches alone: {(f_user + f_sys) / gb:.2f} CPU s per raw GB")
    for feed in feeds:
        table_rows, verdicts = [], []
        fed_user, fed_sys = (f_user, f_sys) if feed == "copy" else (0.0, 0.0)
        for label in formats:
            for codec in codecs:
                for threads in thread_counts:
                    pipe, alone = results[(label, codec, threads, feed)], results[(label, codec, threads, "codec")]
                    wall, user, system, stored = (median([r[i] for r in pipe]) for i in range(4))
                    a_wall, a_user, a_sys, a_stored, a_raw = (median([r[i] for r in alone]) for i in range(5))
                    rate, a_rate = gb / wall, a_raw / a_wall / 1e9
                    # per stored GB; the write path: everything but the feed (a CPU run's forward hook)
                    user, system = (user - fed_user) / (stored / 1e9), (system - fed_sys) / (stored / 1e9)
                    a_user, a_sys = a_user / (a_stored / 1e9), a_sys / (a_stored / 1e9)
                    cpu_gb, a_cpu_gb = user + system, a_user + a_sys
                    table_rows.append([label, codec, threads, f"{rate:.2f}", f"{a_rate:.2f}",
                                       f"{rate / a_rate:.2f}", f"{rate / (gb / t_wall):.2f}", f"{cpu_gb:.2f}",
                                       f"{a_cpu_gb:.2f}", f"{cpu_gb / a_cpu_gb:.2f}",
                                       f"{system - a_sys:.2f} / {user - a_user:.2f}", f"{raw / stored:.2f}"])
                    if codec != "none":
                        ok = rate >= TARGET_RATE * a_rate and cpu_gb <= TARGET_CPU * a_cpu_gb
                        verdicts.append(f"{label} {codec} {threads} thread(s): {rate / a_rate:.2f}x the codec's "
                                        f"GB/s, {cpu_gb / a_cpu_gb:.2f}x its CPU s/GB ({'MET' if ok else 'MISSED'})")
        print(f"\nfeed: {feed} ({FEEDS[feed]})\n")
        print(table(table_rows, ["format", "codec", "threads", "GB/s", "codec alone GB/s", "vs codec", "vs tofile",
                                 "write path CPU s/stored GB", "codec alone", "vs codec",
                                 "beyond codec: kernel / rest", "raw/stored"]))
        print(f"\ntargets ({feed} feed): >= {TARGET_RATE}x the codec alone's GB/s, <= {TARGET_CPU}x its CPU "
              f"s/GB, same threads:")
        print("\n".join(verdicts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512, help="rows written per run (a multiple of --images)")
    parser.add_argument("--images", type=int, default=128, help="pre-made rows (a multiple of 64), cycled")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="*", default=None, help="codec threads [default: 1..cores]")
    parser.add_argument("--formats", nargs="*", default=list(FORMATS), choices=list(FORMATS), metavar="FORMAT",
                        help=f"of {', '.join(repr(f) for f in FORMATS)} [default: all]")
    parser.add_argument("--codecs", nargs="*", default=list(COMPRESSIONS), choices=list(COMPRESSIONS),
                        help="[default: all]")
    parser.add_argument("--feeds", nargs="*", default=list(FEEDS), choices=list(FEEDS),
                        help="how batches reach the host batches: copied by the CPU, or handed over as a GPU's "
                             "device-to-host copy leaves them [default: both]")
    args = parser.parse_args()
    if args.images % BATCH or args.rows % args.images:
        parser.error(f"--images must be a multiple of {BATCH} and --rows a multiple of --images")
    thread_counts = args.threads or list(range(1, config.usable_cores() + 1))
    acts = {name: np.ascontiguousarray(a[:args.images]) for name, a in activations(args.images).items()}
    raw = args.rows * sum(a[0].nbytes for a in acts.values())
    print(f"machine: {machine()}; deflate: {deflate.IMPLEMENTATION}")
    print(f"{args.rows} rows ({raw / 1e9:.2f} GB raw) per run, batches of {BATCH}, layers "
          f"{', '.join(f'{k} {a.shape[1:]}' for k, a in acts.items())}; disk {SCRATCH}; "
          f"{args.repeats} interleaved repeat(s), medians\n")
    results, raw = run(acts, args.rows, args.repeats, thread_counts, args.formats, args.codecs, args.feeds)
    report(results, raw, thread_counts, args.formats, args.codecs, args.feeds)
    remove(SCRATCH / "pipeline")


if __name__ == "__main__":
    main()
