"""Setup: checking a folder of images before a run (``ImageSet.check``), per approach.

4,096 small photographs (3 JPEG : 1 PNG, 64-256 px, as benchmarks/_common.py
makes them) plus four bad files (a truncated JPEG, an empty file, text named
.png, a corrupted PNG chunk). Every approach must name exactly the bad files;
the table gives median seconds of 5 interleaved repeats (the page cache warm,
as on a second run over the same folder).

- Pillow: the check before (``Image.open``, PNG ``verify``, a JPEG's end),
  on 8 threads as it ran, on one thread, and on a process pool.
- structure walk: sound JPEGs and PNGs read without Pillow
  (actstore/image_headers.py), anything else still through Pillow; on one
  thread, 8 threads, a process pool.
- ``ImageSet.check``: as shipped (processes only beyond two blocks of
  ``CHECK_BLOCK_FILES``).
- lazily in the decode workers: no setup time, but the same CPU per file
  moves into the workers that limit a GPU run, and a bad file is found only
  when its batch comes, after rows were written.

    python benchmarks/bench_setup.py            # 4,096 images
    python benchmarks/bench_setup.py --images 16384
"""
from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from _common import SCRATCH, machine, median, spread, table

import numpy as np
from PIL import Image

from actstore import config
from actstore.images import CHECK_BLOCK_FILES, ImageSet, _pillow_problem, _problem

TARGET_SECONDS = 0.25   # the target, per 4,096 images


def make_folder(n: int) -> Path:
    folder = SCRATCH / f"setup-{n}"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        side = int(rng.integers(64, 257))
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((side, side), Image.BICUBIC)
        image.save(folder / f"img_{i:05d}.{'png' if i % 4 == 3 else 'jpg'}", quality=90)
    good = (folder / "img_00000.jpg").read_bytes()
    (folder / "bad_cut.jpg").write_bytes(good[:len(good) // 2])
    (folder / "bad_empty.jpg").write_bytes(b"")
    (folder / "bad_text.png").write_text("not an image")
    png = bytearray((folder / "img_00003.png").read_bytes())
    png[png.index(b"IDAT") + 6] ^= 0xFF   # image data whose CRC no longer matches
    (folder / "bad_crc.png").write_bytes(bytes(png))
    (folder / ".complete").touch()
    return folder


def pillow_before(path: Path) -> str:
    """The check as it was: stat, then Pillow."""
    return "empty file (0 bytes)" if path.stat().st_size == 0 else _pillow_problem(path)


def _serial(check, paths: list[Path]) -> list[str]:
    return [check(p) for p in paths]


def _threads(check, paths: list[Path], workers: int = 8) -> list[str]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(check, paths))


def _processes(check, paths: list[Path]) -> list[str]:
    workers = config.usable_cores()
    blocks = [paths[i::workers] for i in range(workers)]   # interleaved: equal work per process
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(_serial, [check] * workers, blocks))
    out = [""] * len(paths)
    for i, reasons in enumerate(done):
        out[i::workers] = reasons
    return out


def pool_start_seconds() -> float:
    """Seconds until a spawned process pool (one process per usable core) has
    run one task each: the start ``ImageSet.check`` pays for processes."""
    from actstore import images as images_module   # what the workers import: actstore
    workers = config.usable_cores()
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(images_module._problems, [[]] * workers, [Image.MAX_IMAGE_PIXELS] * workers))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    images = ImageSet.scan(make_folder(args.images))
    paths = [images.path(row) for row in range(len(images))]
    print(f"machine: {machine()}")
    print(f"{len(images)} files ({args.images} images + 4 bad), {args.repeats} interleaved repeats\n")
    variants = {
        "Pillow, 8 threads (before)": lambda: _threads(pillow_before, paths),
        "Pillow, 1 thread": lambda: _serial(pillow_before, paths),
        f"Pillow, {config.usable_cores()} processes (spawn)": lambda: _processes(pillow_before, paths),
        "structure walk, 1 thread": lambda: _serial(_problem, paths),
        "structure walk, 8 threads": lambda: _threads(_problem, paths),
        f"structure walk, {config.usable_cores()} processes (spawn)": lambda: _processes(_problem, paths),
        "ImageSet.check (as shipped)": lambda: [r for _, r in sorted(dict(images.check()).items())],
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    expected = sorted(name for name in images.file_names if name.startswith("bad_"))
    for _ in range(args.repeats):
        for name, run in variants.items():
            started = time.perf_counter()
            reasons = run()
            seconds[name].append(time.perf_counter() - started)
            named = [r for r in reasons if r] if name.startswith("ImageSet") else \
                [images.file_names[i] for i, r in enumerate(reasons) if r]
            assert len(named) == len(expected), (name, named)
    before = median(seconds["Pillow, 8 threads (before)"])
    rows = [[name, f"{median(s):.3f}", f"{median(s) / len(paths) * 1e6:.0f}", f"{before / median(s):.1f}x",
             spread(s)] for name, s in seconds.items()]
    walk = median(seconds["structure walk, 1 thread"])
    rows.append(["lazily in the decode workers", "0 (setup)", f"{walk / len(paths) * 1e6:.0f} (in the workers)",
                 "-", "-"])
    print(table(rows, ["approach", "seconds", "us per file", "vs before", "spread"]))
    shipped = median(seconds["ImageSet.check (as shipped)"]) * 4096 / len(paths)
    print(f"\nbad files named by every approach: {', '.join(expected)}")
    start = median([pool_start_seconds() for _ in range(3)])
    per_file = walk / len(paths)
    cores = config.usable_cores()
    print(f"a spawned pool of {cores} processes starts in {start:.2f} s: processes pay off beyond "
          f"~{start / (per_file * (1 - 1 / cores)):,.0f} files here (ImageSet.check starts them beyond "
          f"{2 * CHECK_BLOCK_FILES:,})")
    print(f"target: <= {TARGET_SECONDS} s per 4,096 images: ImageSet.check {shipped:.3f} s "
          f"({'MET' if shipped <= TARGET_SECONDS else 'MISSED'})")


if __name__ == "__main__":
    main()
