"""Tunables and heuristics users may change, in one place, each with the reason for its value.

Codec settings live with the codec (:mod:`actstore.store.codecs`).
"""
import os

# Rows per chunk along the image axis. Small enough that reading a handful of
# random images touches little data, large enough that a chunk of a linear
# layer is not a few kilobytes. Shards of a multi-process run align to it.
CHUNK_IMAGES = 16

# Shards: one file (or object) holds this many rows of inner chunks, so
# a store is thousands of files, not millions (HPC inode quotas, per-request
# object store costs; creating a file costs ~0.4 ms here whatever its size).
# 4096 rows: ImageNet's 1.28M images are 313 shards per layer (256x fewer
# files than 16-row chunks); THINGS' 26,107 are 7, so up to 7 --shard
# processes still each get rows; a killed run recomputes at most 4096 images
# per process. Every layer gets these rows, whatever its width: a shard is
# written as a stream (its chunks appended as their rows arrive, the index
# last), so it never has to fit in memory. Shard rows are what a --shard
# process range, resume and rechunk align to; the row buffer aligns to chunk
# rows. See docs/performance.md, "Sharded Zarr at ImageNet scale".
SHARD_ROWS = 4096

# Upper bound on one chunk's raw size. Conv layers whose CHUNK_IMAGES rows
# exceed it are also split along channels (units), so that reading one channel
# across all images does not decompress whole feature maps. 1 MiB beat 4 MiB
# on all three read patterns measured (64 random images, one channel, one
# class; benchmarks/bench_chunk_layout.py, docs/analysis.md, "Chunk layout").
CHUNK_BYTES = 2**20

BATCH_SIZE = 64
# DataLoader decode processes when --num-workers is not given. On the CPU the
# model needs the cores, and 2 keep a 2-core machine's forward pass fed; on a
# GPU the CPU only decodes (and compresses), and a GPU forward pass outruns
# 2 decoders by far: up to GPU_NUM_WORKERS, leaving cores for compression.
NUM_WORKERS = 2
GPU_NUM_WORKERS = 8


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (what a batch scheduler
    such as SLURM grants), not every core of the node."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS, Windows
        return os.cpu_count() or 1


def num_workers(device_type: str) -> int:
    """Decode processes for a run on ``device_type`` when none are asked for."""
    if device_type == "cpu":
        return NUM_WORKERS
    return max(NUM_WORKERS, min(GPU_NUM_WORKERS, usable_cores() - 2))


def codec_threads(device_type: str, num_workers: int) -> int:
    """Threads compressing chunks. On the CPU every usable core: the model and
    the codec take turns on them. On a GPU the cores the decode workers and
    the main thread leave free (at least 2): with a thread per core on top of
    the workers, the oversubscribed main thread launched the model's kernels
    2-15x slower than alone (H200 node, 16 cores; docs/performance.md, "On a GPU")."""
    if device_type == "cpu":
        return usable_cores()
    return max(2, usable_cores() - num_workers - 1)


# Finished batches waiting for the writer. The model blocks only when this
# many batches are queued, which bounds memory to a few batches.
WRITE_QUEUE_BATCHES = 4
