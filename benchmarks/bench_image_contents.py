"""The cost of the images' content fingerprints (issue 23): what a run adds to its start.

Every run reads each image once more, on a thread pool, to fingerprint its
content (size and an 8-byte BLAKE2b of its bytes; ``ImageSet.contents``), so
that a resume notices an image replaced under the same name. This times
that pass on 26,107 generated JPEGs (THINGS' image count), side by side with
the scan and the cheap pre-check (``ImageSet.check``) every run already does,
each twice (the second from the page cache, as a resume finds them).

    python benchmarks/bench_image_contents.py            # 26,107 JPEGs of 256 px
    python benchmarks/bench_image_contents.py --n 2000   # quicker
"""
from __future__ import annotations

import argparse
import time

from _common import dir_bytes, machine, make_images

from actstore.images import ImageSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=26107)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    folder = make_images(args.n, size=args.size)
    print(f"{machine()}; {args.n:,} JPEGs of {args.size} px, {dir_bytes(folder) / 2**20:.0f} MiB")
    for attempt in (1, 2):
        started = time.perf_counter()
        images = ImageSet.scan(folder)
        scanned = time.perf_counter()
        images.check()
        checked = time.perf_counter()
        images.contents()
        hashed = time.perf_counter()
        scan, check, contents = scanned - started, checked - scanned, hashed - checked
        print(f"pass {attempt}: scan {scan:.2f} s, pre-check {check:.2f} s, content fingerprints {contents:.2f} s "
              f"({contents / (scan + check):.2f}x the scan and pre-check)")


if __name__ == "__main__":
    main()
