"""``actstore export --file-format txt`` against writing the same array with one ``np.savetxt`` call.

For each layer shape a Zarr store is built once; then, each in a fresh process
(so that peak RSS is that variant's alone, read from VmHWM):

- export:      ``export_layer(store, layer, out, "txt")``: streams chunk by chunk;
- savetxt:     read the whole layer into RAM, then one ``np.savetxt`` call on it
               (for a 4-D layer on its (N*C*H, W) reshape: the same numbers
               without the slice markers, the fastest the text can be written);
- original:    (4-D only) read the whole layer, then the original
               ``tensor2slices`` loop (one ``np.savetxt`` per slice).

Times are the write step inside the process (the read into RAM is counted
for savetxt/original as well, since export includes its reads). Variants are
interleaved and repeated; the table shows medians.

    python benchmarks/bench_legacy_export.py            # 2 repeats (~2 min on 2 cores)
    python benchmarks/bench_legacy_export.py --small    # smaller layers, 1 repeat
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
from _common import REPO, SCRATCH, cpu_name, mb, median, table

from actstore.store import LayerSpec, Layout, choose_chunks, create_writer

CASES = {  # name: (rows, per-image shape) ~ alexnet classifier.4 and features.10
    "classifier.4": (2000, (4096,)),
    "features.10": (200, (256, 13, 13)),
}
SMALL = {"classifier.4": (400, (4096,)), "features.10": (40, (256, 13, 13))}

SCRIPT = textwrap.dedent("""
    import json, os, re, sys, time
    import numpy as np
    from actstore.legacy import export_layer
    from actstore.store import open_store
    store, layer, out, variant = sys.argv[1:]
    started = time.perf_counter()
    if variant == "export":
        export_layer(store, layer, out, "txt")
    else:
        with open_store(store) as s:
            x = s[layer][:]
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "activations.txt")
        if variant == "savetxt":
            np.savetxt(path, x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x,
                       fmt="%-7.5f" if x.ndim > 2 else "%.18e")
        else:  # the original tensor2slices, verbatim apart from names
            with open(path, "w") as outfile:
                outfile.write(f"# Array shape: {x.shape}\\n")
                for i in range(x.shape[0]):
                    for j in range(x.shape[1]):
                        np.savetxt(outfile, x[i, j, :, :], fmt="%-7.5f")
                        outfile.write("# New slice\\n")
    seconds = time.perf_counter() - started
    peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    print(json.dumps({"seconds": seconds, "peak": peak}))
""")


def build_store(name: str, rows: int, shape: tuple[int, ...]):
    path = SCRATCH / f"legacy-{name}-{rows}.zarr"
    if path.exists():
        shutil.rmtree(path)
    rng = np.random.default_rng(0)
    spec = LayerSpec(name, shape, shape, "float32", choose_chunks(shape, 4, 16))
    attrs = {"format": "actstore", "model_name": "alexnet"}
    writer = create_writer(path, "zarr", Layout(rows, (spec,), 16), [f"img{i}.jpg" for i in range(rows)],
                           np.zeros(rows, dtype=np.int64), [], attrs)
    for start in range(0, rows, 16):
        block = rng.standard_normal((min(16, rows - start), *shape)).astype(np.float32)
        writer.write_rows(start, {name: np.maximum(block, 0)})     # ReLU-like: half zeros
    writer.close()
    return path


def run(store, layer: str, variant: str) -> dict:
    out = SCRATCH / f"legacy-out-{variant}"
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(store), layer, str(out), variant],
                          capture_output=True, text=True, cwd=REPO, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["bytes"] = sum(p.stat().st_size for p in out.rglob("activations*"))
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    cases = SMALL if args.small else CASES
    repeats = args.repeats or (1 if args.small else 2)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    rows_out = []
    for layer, (rows, shape) in cases.items():
        store = build_store(layer, rows, shape)
        variants = ["export", "savetxt"] + (["original"] if len(shape) > 1 else [])
        results = {v: [] for v in variants}
        for _ in range(repeats):
            for variant in variants:
                results[variant].append(run(store, layer, variant))
        raw = rows * int(np.prod(shape)) * 4
        for variant, runs in results.items():
            seconds = median([r["seconds"] for r in runs])
            rows_out.append([f"{layer} {(rows, *shape)}", mb(raw), variant, f"{seconds:.1f}",
                             f"{rows * np.prod(shape) / seconds / 1e6:.2f}", mb(median([r["peak"] for r in runs])),
                             mb(runs[0]["bytes"])])
        shutil.rmtree(store)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, numpy {np.__version__}; "
          f"median of {repeats}")
    print(table(rows_out, ["layer (shape)", "raw MB", "writer", "seconds", "M values/s", "peak RSS MB",
                           "text MB"]))


if __name__ == "__main__":
    main()
