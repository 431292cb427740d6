"""Reductions over a store on a dask.distributed cluster, in bounded memory per worker.

Computes the per-class mean of a conv layer and the image-by-image
correlation matrix (1 - RDM) of a linear layer. Workers open the store by its
path or URL (a layer's dask array pickles as the path, never as data) and each
holds only the few chunks it is reducing, so a store far larger than the
cluster's memory streams through it.

    pip install 'actstore[cloud]'
    python examples/dask_distributed.py alexnet.zarr --conv features.4 --linear classifier.4
    python examples/dask_distributed.py s3://bucket/alexnet.zarr --workers 8 --memory-limit 2GiB
    python examples/dask_distributed.py alexnet.zarr --scheduler tcp://10.0.0.5:8786   # a running cluster
    python examples/dask_distributed.py alexnet.zarr --rdm-class dog --out results.npz

Without ``--scheduler`` it starts a ``LocalCluster`` of ``--workers``
processes with one thread and ``--memory-limit`` each. A worker holds its
baseline (Python, NumPy, zarr) plus a few dask chunks of at most 64 MiB
(``actstore.store.read.views.DASK_CHUNK_BYTES``) at a time.
"""
from __future__ import annotations

import argparse
import time

import dask
import dask.array as da
import numpy as np

from actstore import open_store


def class_means(store, layer: str) -> dict[str, da.Array]:
    """The mean activation map of each class (of every image, under ``""``, when
    the images had no classes), float64 and lazy: compute them together so the
    layer is read in one pass."""
    return {name: store.to_dask(layer, rows=store.select(classes=name) if name else None)
            .mean(axis=0, dtype=np.float64)
            for name in store.classes or [""]}


def correlation(store, layer: str, rows=None, block_rows: int = 1024) -> da.Array:
    """Pearson correlation between images over a layer's units: an (n, n) float64
    array (lazy) in ``block_rows`` x ``block_rows`` blocks. ``1 - correlation`` is the RDM."""
    x = store.to_dask(layer, rows=rows).astype(np.float64)
    x = x.reshape(x.shape[0], -1).rechunk({0: block_rows, 1: -1})
    z = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    return z @ z.T / z.shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="a .zarr store: local path or URL (s3://bucket/x.zarr)")
    parser.add_argument("--conv", default="features.4", help="layer for per-class means")
    parser.add_argument("--linear", default="classifier.4", help="layer for the correlation matrix")
    parser.add_argument("--rdm-class", help="correlate only this class's images [default: every image]")
    parser.add_argument("--scheduler", help="address of a running scheduler instead of a LocalCluster")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--memory-limit", default="1GiB", help="LocalCluster memory limit per worker")
    parser.add_argument("--out", help="save the results to this .npz")
    args = parser.parse_args()

    from distributed import Client, LocalCluster
    cluster = None if args.scheduler else LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=args.memory_limit)
    with Client(args.scheduler or cluster) as client:
        print(f"dashboard: {client.dashboard_link}")
        started = time.perf_counter()
        with open_store(args.store) as store:
            means = class_means(store, args.conv)
            rows = store.select(classes=args.rdm_class) if args.rdm_class else None
            corr = correlation(store, args.linear, rows=rows)
        # One pass for every class; the arrays read the store by path after the with block.
        means = dict(zip(means, dask.compute(*means.values())))
        corr = corr.compute()
        print(f"{len(means)} class means of {args.conv} {next(iter(means.values())).shape} and a "
              f"{corr.shape} correlation matrix of {args.linear} in {time.perf_counter() - started:.1f} s")
        if args.out:
            np.savez(args.out, classes=np.array(list(means)), class_means=np.stack(list(means.values())),
                     correlation=corr)
    if cluster is not None:
        cluster.close()


if __name__ == "__main__":
    main()
