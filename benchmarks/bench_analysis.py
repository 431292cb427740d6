"""Representational analysis from a store: exactness, bounded memory and speed,
side by side, in one run.

1. Exact: ``rdm`` (every metric, Zarr and HDF5), ``cka`` (biased and
   debiased), ``pca`` and the minibatch CKA against the formulas computed in
   RAM with NumPy (and scikit-learn's full-SVD PCA).
2. Bounded memory: a layer at least 4x ``--max-memory``; each of ``rdm``,
   ``cka`` and ``pca`` runs in its own process, its peak RSS polled.
3. Fast: ``rdm`` from the store (reading and decompressing included) against
   THINGSvision's ``compute_rdm`` formula and rsatoolbox's ``calc_rdm`` on the
   same data already in RAM; ``pca`` against scikit-learn's randomized PCA in RAM.

    python benchmarks/bench_analysis.py            # 4,000 x 128,000 (2 GB) layer, 512MB budget (~6 min, 2 cores)
    python benchmarks/bench_analysis.py --small    # a quick check (~1 min)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import SCRATCH, cpu_name, dir_bytes, mb, remove, run_measured, table

from actstore.store import FORMAT_NAME, LayerSpec, Layout, choose_shard_rows, create_writer, reopen_writer

CLASSES = 20


def write_synthetic(path: Path, fmt: str, n: int, units: dict[str, int], chunk_rows: int = 32,
                    chunk_units: int = 2048, seed: int = 0) -> None:
    """A store of flat layers sharing a rank-32 class-structured signal plus noise,
    written in blocks of rows (never whole in memory), Zarr sharded as ``extract`` writes it."""
    remove(path)
    rng = np.random.default_rng(seed)
    targets = np.arange(n) * CLASSES // n
    specs = tuple(LayerSpec(name, (p,), (p,), "float32", (chunk_rows, min(p, chunk_units)))
                  for name, p in units.items())
    layout = Layout(n_rows=n, layers=specs, chunk_images=chunk_rows, compression="zstd",
                    shard_rows=choose_shard_rows(fmt, specs, n, chunk_rows))
    writer = create_writer(path, fmt, layout,
                           [f"c{t:02d}/img_{i:05d}.jpg" for i, t in enumerate(targets)], targets,
                           [f"c{c:02d}" for c in range(CLASSES)], {"format": FORMAT_NAME, "status": "complete"})
    prototypes = rng.standard_normal((CLASSES, 32))
    mixing = {name: rng.standard_normal((32, p)).astype(np.float32) for name, p in units.items()}
    step = max(chunk_rows, (64 * 2**20 // (4 * max(units.values()))) // chunk_rows * chunk_rows)
    for start in range(0, n, step):
        stop = min(n, start + step)
        latent = (prototypes[targets[start:stop]] + rng.standard_normal((stop - start, 32))).astype(np.float32)
        block = {name: latent @ w + rng.standard_normal((stop - start, w.shape[1]), dtype=np.float32)
                 for name, w in mixing.items()}
        writer.write_rows(start, block)
    writer.close()


def read_all(path: Path, layer: str) -> np.ndarray:
    from actstore import open_store
    with open_store(path) as store:
        return store[layer][:]


# --------------------------------------------------------------------------- 1. exactness


def formula_rdm(x: np.ndarray, metric: str) -> np.ndarray:
    x = x.astype(np.float64)
    if metric == "correlation":
        d = 1 - np.corrcoef(x)
    elif metric == "cosine":
        norms = np.linalg.norm(x, axis=1)
        d = 1 - x @ x.T / np.outer(norms, norms)
    else:
        sq = np.einsum("ij,ij->i", x, x)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))
    np.fill_diagonal(d, 0)
    return d


def formula_cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    n = len(x)
    k, l = x.astype(np.float64) @ x.T.astype(np.float64), y.astype(np.float64) @ y.T.astype(np.float64)

    def hsic(a, b):
        if not debiased:
            h = np.eye(n) - 1 / n
            return np.sum((h @ a @ h) * b)
        a, b = a.copy(), b.copy()
        np.fill_diagonal(a, 0)
        np.fill_diagonal(b, 0)
        one = np.ones(n)
        return (np.sum(a * b) + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (a @ one) @ (b @ one)) \
            / (n * (n - 3))
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def shared_units(x: np.ndarray) -> np.ndarray:
    """A ReLU layer from ``x``, each row scaled and lifted by its own constant:
    rows share their large units (cosines and correlations near 1)."""
    rng = np.random.default_rng(1)
    return (np.maximum(x, 0) * rng.uniform(0.5, 3, (len(x), 1)) + rng.uniform(0, 10, (len(x), 1))).astype(np.float32)


def rdm_rows(path: Path, fmt: str, x: np.ndarray, data: str) -> list[list]:
    from actstore.analysis import rdm
    rows = []
    for metric in ("correlation", "cosine", "euclidean"):
        for precision in ("auto", "float64"):
            result = rdm(path, "a", metric=metric, precision=precision)
            error = np.abs(result.values - formula_rdm(x, metric)).max()
            rows.append([f"rdm {metric}, precision {precision} ({result.attrs['products']} products{data})", fmt,
                         f"{error:.1e}", "1e-6 abs", "yes" if error <= 1e-6 else "NO"])
    return rows


def exactness(small: bool) -> list[list]:
    from sklearn.decomposition import PCA

    from actstore.analysis import cka, pca
    rows = []
    n, units = (300, {"a": 3000, "b": 500}) if small else (1000, {"a": 6000, "b": 1000})
    for fmt, suffix in (("zarr", ".zarr"), ("hdf5", ".h5")):
        path = SCRATCH / f"analysis-exact{suffix}"
        write_synthetic(path, fmt, n, units)
        x, y = read_all(path, "a"), read_all(path, "b")
        rows += rdm_rows(path, fmt, x, "")
        if fmt == "zarr":   # rows sharing large units: float32 sums of y·y would lose digits here
            shared = shared_units(x)
            with reopen_writer(path) as writer:
                writer.write_rows(0, {"a": shared})
            rows += rdm_rows(path, fmt, shared, ", ReLU rows sharing large units")
            with reopen_writer(path) as writer:
                writer.write_rows(0, {"a": x})
        for debiased in (False, True):
            error = abs(float(cka(path, "a", layer_b="b", debiased=debiased)) - formula_cka(x, y, debiased))
            rows.append([f"cka{' debiased' if debiased else ''}", fmt, f"{error:.1e}", "1e-6 abs",
                         "yes" if error <= 1e-6 else "NO"])
        reference = PCA(10, svd_solver="full").fit(x.astype(np.float64))
        # auto; the exact Gram form; randomized held in RAM; randomized over the store (a budget
        # below the layer's float32 bytes)
        for method, budget in (("auto", "2GB"), ("gram", "2GB"), ("randomized", "2GB"), ("randomized", "16MB")):
            result = pca(path, "a", 10, method=method, max_memory=budget)
            ratio = np.abs(result.explained_variance_ratio.values / reference.explained_variance_ratio_ - 1).max()
            cosine = np.abs(np.sum(result.flat_components * reference.components_, axis=1)).min()
            ok = ratio <= 1e-4 and cosine >= 0.9999
            how = f" ({result.passes} passes, q={result.power_iterations})" if result.power_iterations else ""
            rows.append([f"pca {method}: {result.method}{how}", fmt, f"ratio {ratio:.1e}, min cos {cosine:.6f}",
                         "1e-4 rel, cos >= 0.9999", "yes" if ok else "NO"])
        remove(path)
    path = SCRATCH / "analysis-minibatch.zarr"
    write_synthetic(path, "zarr", 10_000, {"a": 256, "b": 128}, chunk_rows=256)
    exact = float(cka(path, "a", layer_b="b"))
    batched = float(cka(path, "a", layer_b="b", method="minibatch", batch_size=1000, seed=0))
    rows.append(["cka minibatch (10,000 rows, batches of 1,000)", "zarr", f"{abs(batched - exact):.4f}",
                 "0.02 abs", "yes" if abs(batched - exact) <= 0.02 else "NO"])
    remove(path)
    return rows


# --------------------------------------------------------------------------- 2. bounded memory


def child(call: str, path: str, budget: str) -> None:
    """One call, in this process, for the parent to measure."""
    from actstore.analysis import cka, pca, rdm
    started = time.perf_counter()
    if call == "rdm":
        passes = rdm(path, "big", max_memory=budget, out=Path(path).with_suffix(".rdm.zarr")).attrs["passes"]
    elif call == "cka":
        passes = cka(path, "big", layer_b="small", max_memory=budget).passes
    else:
        passes = pca(path, "big", 10, max_memory=budget).passes
    print(json.dumps({"passes": passes, "seconds": time.perf_counter() - started, "maxrss": high_water_mark()}))


def high_water_mark() -> int:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux
    carries that over from the parent across fork and exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def bounded_memory(small: bool, budget: str) -> tuple[list[list], str]:
    from actstore.analysis.blocks import parse_memory
    n, p = (1500, 20_000) if small else (4000, 128_000)
    path = SCRATCH / "analysis-big.zarr"
    write_synthetic(path, "zarr", n, {"big": p, "small": 1024})
    layer_bytes = n * p * 4
    limit = parse_memory(budget) + 500e6
    rows = []
    for call in ("rdm", "cka", "pca"):
        run = run_measured([sys.executable, __file__, "--child", call, str(path), "--max-memory", budget])
        if run["returncode"] != 0:
            raise SystemExit(f"{call} failed:\n{run['output']}")
        report = json.loads(run["output"].strip().splitlines()[-1])
        peak = max(run["peak_main"], report["maxrss"])   # polled every 50 ms, and the kernel's high-water mark
        rows.append([call, f"{layer_bytes / 1e9:.2f} GB", budget, mb(peak), f"{report['passes']}",
                     f"{report['seconds']:.1f}", "yes" if peak <= limit else "NO"])
    what = (f"layer `big`: {n:,} rows x {p:,} units float32 ({layer_bytes / 1e9:.2f} GB raw, "
            f"{dir_bytes(path) / 1e9:.2f} GB stored, zstd), {layer_bytes / parse_memory(budget):.1f}x max_memory")
    remove(path)
    remove(path.with_suffix(".rdm.zarr"))
    return rows, what


# --------------------------------------------------------------------------- 3. speed


def thingsvision_rdm(x: np.ndarray) -> np.ndarray:
    """THINGSvision 2.x ``compute_rdm(x, "correlation")`` (thingsvision/core/rsa/helpers.py):
    rows centred, their Gram matrix over the outer product of their norms, clipped
    to [-1, 1], subtracted from 1; in the dtype of ``x``."""
    centred = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    return 1 - (centred @ centred.T / np.outer(norms, norms)).clip(-1.0, 1.0)


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def speed_rows(n: int, p: int, rsatoolbox_too: bool) -> list[list]:
    """One shape: rdm and pca from a store against the references in RAM, side by side."""
    from sklearn.decomposition import PCA

    from actstore.analysis import pca, rdm
    path = SCRATCH / "analysis-speed.zarr"
    write_synthetic(path, "zarr", n, {"a": p})
    x = read_all(path, "a")
    x64 = x.astype(np.float64)
    exact = formula_rdm(x64, "correlation")
    gb = n * p * 4 / 1e9
    shape = f"{n:,} x {p:,}"
    reading = best_of(lambda: read_all(path, "a"))
    ours = {precision: best_of(lambda: rdm(path, "a", precision=precision)) for precision in ("auto", "float64")}
    theirs = best_of(lambda: thingsvision_rdm(x64))
    single = best_of(lambda: thingsvision_rdm(x))
    rows = []
    for precision, what in (("auto", "float32 products"), ("float64", "float64 products")):
        error = np.abs(rdm(path, "a", precision=precision).values - exact).max()
        rows.append([shape, f"rdm correlation: actstore from the store, precision {precision} ({what}, "
                     f"max error {error:.0e}; 1 pass)", f"{ours[precision]:.2f}", f"{ours[precision] / theirs:.2f}",
                     f"{ours[precision] / single:.2f}", f"{gb / ours[precision]:.2f} GB/s"])
    rows += [[shape, "THINGSvision compute_rdm on float64 rows in RAM", f"{theirs:.2f}", "1.00",
              f"{theirs / single:.2f}", "-"],
             [shape, f"THINGSvision compute_rdm on float32 rows in RAM (max error "
              f"{np.abs(thingsvision_rdm(x) - exact).max():.0e})", f"{single:.2f}", f"{single / theirs:.2f}", "1.00",
              "-"],
             [shape, "(reading the layer alone, decompression included)", f"{reading:.2f}",
              f"{reading / theirs:.2f}", f"{reading / single:.2f}", f"{gb / reading:.2f} GB/s"]]
    if rsatoolbox_too:
        try:
            import rsatoolbox
            data = rsatoolbox.data.Dataset(x)
            rsa = best_of(lambda: rsatoolbox.rdm.calc_rdm(data, method="correlation"), repeat=1)
            rows.append([shape, "rsatoolbox calc_rdm in RAM", f"{rsa:.2f}", f"{rsa / theirs:.2f}",
                         f"{rsa / single:.2f}", "-"])
        except ImportError:
            rows.append([shape, "rsatoolbox calc_rdm", "not installed", "-", "-", "-"])
    sk = best_of(lambda: PCA(20, svd_solver="randomized", random_state=0).fit(x))
    exact = PCA(20, svd_solver="full").fit(x64) if n * p <= 40e6 else None
    for method in ("auto", "gram"):
        ours_pca = best_of(lambda: pca(path, "a", 20, method=method))
        run = pca(path, "a", 20, method=method)
        how = f"{run.method}, q={run.power_iterations}" if run.power_iterations else run.method
        if exact is not None:
            ratio = np.abs(run.explained_variance_ratio.values / exact.explained_variance_ratio_ - 1).max()
            how += f", ratio error {ratio:.0e}"
        rows.append([shape, f"pca 20 components: actstore {method} ({how}; {run.passes} pass(es))",
                     f"{ours_pca:.2f}", f"{ours_pca / sk:.2f}", "-", f"{run.passes * gb / ours_pca:.2f} GB/s"])
    fitted = PCA(20, svd_solver="randomized", random_state=0).fit(x)
    note = "" if exact is None else \
        f" (ratio error {np.abs(fitted.explained_variance_ratio_ / exact.explained_variance_ratio_ - 1).max():.0e})"
    rows.append([shape, f"scikit-learn PCA(svd_solver='randomized') on float32 in RAM{note}", f"{sk:.2f}", "1.00",
                 "-", "-"])
    remove(path)
    return rows


def speed(small: bool) -> tuple[list[list], str]:
    shapes = [(1000, 9216, True)] if small else [(3000, 9216, True), (10_000, 4096, False)]
    rows = [row for n, p, rsa in shapes for row in speed_rows(n, p, rsa)]
    return rows, ("float32 layers (3,000 x 9,216 as AlexNet's features.12; 10,000 x 4,096 as its classifier.4), "
                  "Zarr zstd sharded as extract writes them")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="smaller stores: a quick check")
    parser.add_argument("--max-memory", default="512MB")
    parser.add_argument("--sections", default="exact,memory,speed", help="which of exact, memory, speed to run")
    parser.add_argument("--child", nargs=2, metavar=("CALL", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.max_memory)
        return
    import os
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; NumPy {np.__version__}\n")
    sections = args.sections.split(",")
    if "exact" in sections:
        print("## Exact\n\n" + table(exactness(args.small), ["call", "format", "error", "target", "met"]), flush=True)
    if "memory" in sections:
        rows, what = bounded_memory(args.small, args.max_memory)
        print(f"\n## Bounded memory\n\n{what}\n\n" + table(
            rows, ["call", "layer", "max_memory", "peak RSS MB", "passes", "seconds", "under max_memory + 500 MB"]),
            flush=True)
    if "speed" in sections:
        rows, what = speed(args.small)
        header = ["shape", "call", "seconds", "time / the reference's", "time / THINGSvision float32", "layer read"]
        print(f"\n## Speed\n\n{what}; best of 3; references: THINGSvision on float64 for rdm, "
              "scikit-learn for pca\n\n"
              + table(rows, header))

if __name__ == "__main__":
    main()
