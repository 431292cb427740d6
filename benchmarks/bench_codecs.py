"""Deflate implementations for the gzip codec, side by side on bench_writer's layers.

HDF5's gzip filter (the HDF5 default) and Zarr's gzip codec store plain
deflate, so any implementation whose output stock zlib inflates may write
them. Compared here on the same chunks, in one run: Python's zlib (what
actstore used before), ISA-L (``isal``, what it uses now), libdeflate
(``deflate``) and zlib-ng (``zlib-ng``), each at its fast levels, on real
AlexNet activations (random weights, generated photographs: bench_writer's
``activations``) byte-shuffled as HDF5's shuffle filter does. One thread,
best of 3; every output is inflated with stock zlib and compared with the
input.

Then the HDF5 default end to end: the same layers written through
``create_writer`` + ``write_rows`` (bench_writer's ``write_store``) with
ISA-L and with the zlib fallback (the isal module hidden), interleaved
repeats, medians, MB/s of raw activations until the writer returns.

    python benchmarks/bench_codecs.py            # 128 images (~2 min on 2 cores)
    python benchmarks/bench_codecs.py --images 64
"""
from __future__ import annotations

import argparse
import importlib
import time
import zlib

from _common import SCRATCH, dir_bytes, machine, median, remove, table
from bench_writer import MODULES, activations, write_store

import numpy as np
from numcodecs import Shuffle

from actstore.store import choose_chunks, deflate

TARGET_SPEEDUP = 4.0   # HDF5 default vs zlib level 1, at no worse ratio: the target


def implementations() -> dict[str, callable]:
    """name -> compress(buffer) giving a zlib stream, for every installed library."""
    found = {"zlib 1 (Python's, before)": lambda b: zlib.compress(b, 1)}
    try:
        from isal import isal_zlib
        found.update({f"ISA-L {lv}": (lambda lv: lambda b: isal_zlib.compress(b, lv))(lv) for lv in (0, 1, 2, 3)})
    except ImportError:
        pass
    try:
        import deflate as libdeflate
        found.update({f"libdeflate {lv}": (lambda lv: lambda b: libdeflate.zlib_compress(b, lv))(lv)
                      for lv in (1, 2, 6)})
    except ImportError:
        pass
    try:
        from zlib_ng import zlib_ng
        found.update({f"zlib-ng {lv}": (lambda lv: lambda b: zlib_ng.compress(b, lv))(lv) for lv in (1, 2)})
    except ImportError:
        pass
    return found


def shuffled_chunks(data: np.ndarray) -> list[bytes]:
    """The layer's first chunk column of 64 rows, as HDF5's shuffle filter hands it to deflate."""
    chunks = choose_chunks(data.shape[1:], 4, 16)
    pieces = [np.ascontiguousarray(data[i:i + 16, :chunks[1]]) for i in range(0, 64, 16)]
    return [bytes(Shuffle(elementsize=4).encode(p)) for p in pieces]


def codec_rows(name: str, data: np.ndarray) -> list[list[str]]:
    pieces = shuffled_chunks(data)
    raw = sum(map(len, pieces))
    rows, base = [], None
    for label, compress in implementations().items():
        encoded = [compress(p) for p in pieces]
        assert all(zlib.decompress(e) == p for e, p in zip(encoded, pieces)), label   # stock zlib, bit-exact
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for piece in pieces:
                compress(piece)
            best = min(best, time.perf_counter() - started)
        rate = raw / best / 1e6
        base = base or rate
        rows.append([name, MODULES[name], label, f"{rate:,.0f}", f"{rate / base:.1f}x",
                     f"{raw / sum(map(len, encoded)):.3f}"])
    return rows


def store_rows(acts: dict[str, np.ndarray], repeats: int) -> tuple[list[list[str]], list[str]]:
    """The HDF5 default store written with ISA-L and with the zlib fallback."""
    out = SCRATCH / "codecs"
    out.mkdir(parents=True, exist_ok=True)
    rows, verdicts = [], []
    for name, data in acts.items():
        seconds = {"isal": [], "zlib": []}
        sizes = {}
        for _ in range(repeats):
            for impl in seconds:
                deflate._isal = importlib.import_module("isal.isal_zlib") if impl == "isal" else None
                path = out / f"{impl}.h5"
                remove(path)
                seconds[impl].append(write_store(path, "hdf5", "gzip", name, data)[0])
                sizes[impl] = dir_bytes(path)
                remove(path)
        deflate._isal = importlib.import_module("isal.isal_zlib")
        rate = {impl: data.nbytes / median(s) / 1e6 for impl, s in seconds.items()}
        ratio = {impl: data.nbytes / sizes[impl] for impl in sizes}
        for impl in ("zlib", "isal"):
            rows.append([name, MODULES[name], "ISA-L 1" if impl == "isal" else "zlib 1 (before)",
                         f"{rate[impl]:,.0f}", f"{rate[impl] / rate['zlib']:.1f}x", f"{ratio[impl]:.3f}"])
        speedup, kept = rate["isal"] / rate["zlib"], ratio["isal"] / ratio["zlib"]
        verdicts.append(f"{name} ({MODULES[name]}): {speedup:.1f}x the MB/s, ratio {100 * (kept - 1):+.1f}% "
                        f"({'MET' if speedup >= TARGET_SPEEDUP and kept >= 1 else 'MISSED'})")
    return rows, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}; deflate used by actstore: {deflate.IMPLEMENTATION}\n")
    acts = activations(args.images)
    rows = [row for name, data in acts.items() for row in codec_rows(name, data)]
    print("shuffle + deflate on 4 chunks of each layer, one thread, best of 3 "
          "(every output inflated by stock zlib to its input):\n")
    print(table(rows, ["layer", "type", "deflate", "MB/s", "vs zlib 1", "raw/stored"]))
    rows, verdicts = store_rows(acts, args.repeats)
    print(f"\nHDF5 default (gzip 1 with shuffle) written through create_writer, "
          f"median of {args.repeats} interleaved repeats:\n")
    print(table(rows, ["layer", "type", "deflate", "MB/s (page cache)", "vs before", "raw/stored"]))
    print(f"\ntarget: >= {TARGET_SPEEDUP:.0f}x the MB/s of zlib 1 at no worse ratio:")
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
