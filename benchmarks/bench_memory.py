"""Peak resident memory of ``actstore extract`` for growing image counts.

The command runs as a subprocess; its RSS and that of its children (the
DataLoader decode workers) are polled every 50 ms. AlexNet ``features.0``
keeps 774 KB per image (float32), so a pipeline that held every batch would
grow by ~0.8 GB per 1,000 images; a streaming one stays flat. Images are
small (64 px JPEG, upscaled to 224 px by the preprocessing) so decoding is
cheap and the run is dominated by the forward pass and the writer.

    python benchmarks/bench_memory.py            # 1k, 5k, 10k images (~4 min on 2 cores)
    python benchmarks/bench_memory.py --small    # 200, 400, 800 images
"""
from __future__ import annotations

import argparse
import sys

from _common import SCRATCH, dir_bytes, machine, make_images, mb, remove, run_measured, table

MODULE = "features.0"
BYTES_PER_IMAGE = 64 * 55 * 55 * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="200, 400, 800 images: a quick check")
    parser.add_argument("--counts", type=int, nargs="+", default=None)
    parser.add_argument("--format", default="zarr", choices=["zarr", "hdf5"])
    args = parser.parse_args()
    counts = args.counts or ([200, 400, 800] if args.small else [1000, 5000, 10000])
    print(f"machine: {machine()}")
    print(f"alexnet {MODULE} ({BYTES_PER_IMAGE / 1e3:.0f} KB/image float32), random weights, "
          f"batch 64, 2 decode workers, {args.format}, default codec\n")
    rows = []
    for n in counts:
        images = make_images(n, size=64, seed=1)
        out = SCRATCH / f"memory-{n}.{'zarr' if args.format == 'zarr' else 'h5'}"
        remove(out)
        run = run_measured([sys.executable, "-m", "actstore", "extract", "--model-name", "alexnet",
                            "--weights", "none", "--module-name", MODULE, "--in-path", str(images),
                            "--out-path", str(out), "--quiet"])
        if run["returncode"] != 0:
            raise SystemExit(f"actstore extract failed for {n} images:\n{run['output']}")
        stored = dir_bytes(out)
        remove(out)
        rows.append([n, mb(n * BYTES_PER_IMAGE), mb(stored), f"{run['seconds']:.1f}",
                     f"{n / run['seconds']:.0f}", mb(run["peak_main"]), mb(run["peak_tree"])])
        print(table(rows[-1:], HEADER), flush=True)
    print("\n" + table(rows, HEADER))
    first, last = float(rows[0][-1].replace(",", "")), float(rows[-1][-1].replace(",", ""))
    print(f"\npeak RSS (tree) from {counts[0]} to {counts[-1]} images: {first:,.0f} -> {last:,.0f} MB "
          f"({100 * (last - first) / first:+.0f}%); raw activations grow "
          f"{mb((counts[-1] - counts[0]) * BYTES_PER_IMAGE)} MB")


HEADER = ["images", "raw MB", "stored MB", "seconds", "img/s", "peak RSS main MB",
          "peak RSS tree MB (incl. workers)"]

if __name__ == "__main__":
    main()
