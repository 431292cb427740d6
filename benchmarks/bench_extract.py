"""actstore.extract against a bare decode-preprocess-forward loop (issue: foundation).

Both sides use the same Model object (module and preprocessing), the same
images, the same batch size and the same number of DataLoader decode workers.
The plain loop runs the whole network and keeps nothing; actstore hooks the
requested modules, copies their outputs, stops the forward pass after the last
one, and compresses and writes every batch. Runs are interleaved (plain, zarr,
hdf5, plain, ...) and repeated so that load from other processes on the
machine hits every variant alike; the table shows medians.

    python benchmarks/bench_extract.py            # 512 images, 2 repeats (~5 min on 2 cores)
    python benchmarks/bench_extract.py --small    # 128 images, 2 repeats
    python benchmarks/bench_extract.py --device cuda --amp float16 --channels-last --images 4096
    python benchmarks/bench_extract.py --device cuda --case resnet50:layer4 --formats zarr --stages

``--stages`` also times the two halves of the plain loop alone: decoding
(the DataLoader with nothing downstream) and the forward pass (on a batch
already on the device), which says which stage limits a run. On a GPU with
NVML, the mean GPU utilisation of each run is shown too.

On a GPU, ``--amp`` and ``--channels-last`` apply to both sides (the plain
loop autocasts and converts too), so the ratio is still the cost of storing;
``--decoder torchvision`` applies to actstore only (compare its img/s with a
run without it).
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import time
import warnings

import torch
from _common import SCRATCH, GpuUtilisation, cpu_seconds, machine, make_images, mb, median, spread, table
from torch.utils.data import DataLoader, Dataset

from actstore import extract, load_model, open_store
from actstore.images import ImageSet

CASES = [
    ("alexnet", ["features.0", "classifier.4"]),
    ("alexnet", ["features.6"]),
    ("resnet18", ["layer4.1.conv2"]),
]
FORMATS = ("zarr", "hdf5")


class _Images(Dataset):
    def __init__(self, images: ImageSet, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images.load(i))


def plain_loop(model, images: ImageSet, batch_size: int, num_workers: int, device: str = "cpu",
               amp: str | None = None, channels_last: bool = False) -> float:
    """Seconds for decode, preprocess and a full forward pass of every image; nothing kept."""
    device = torch.device(device)
    model.module.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    started = time.perf_counter()
    loader = DataLoader(_Images(images, model.transform), batch_size=batch_size,
                        num_workers=num_workers, prefetch_factor=4 if num_workers else None,
                        pin_memory=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=getattr(torch, amp)) if amp else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            model.module(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def decode_only(model, images: ImageSet, batch_size: int, num_workers: int) -> float:
    """Seconds for the DataLoader alone: decoding and preprocessing, no model."""
    started = time.perf_counter()
    loader = DataLoader(_Images(images, model.transform), batch_size=batch_size,
                        num_workers=num_workers, prefetch_factor=4 if num_workers else None)
    for _batch in loader:
        pass
    return time.perf_counter() - started


def forward_only(model, n: int, batch_size: int, device: str = "cpu", amp: str | None = None,
                 channels_last: bool = False) -> float:
    """Seconds for the full forward pass of ``n`` images already on the device."""
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.module.to(device, memory_format=memory_format)
    batch = torch.randn(batch_size, 3, *model.input_size, device=device).contiguous(memory_format=memory_format)
    autocast = torch.autocast(device.type, dtype=getattr(torch, amp)) if amp else contextlib.nullcontext()
    started = time.perf_counter()
    with torch.inference_mode(), autocast:
        for _ in range(0, n, batch_size):
            model.module(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def actstore_run(model, modules, in_path, out_path, file_format, batch_size, num_workers, **options):
    if out_path.is_dir():        # removed before the clock starts
        shutil.rmtree(out_path)
    elif out_path.exists():
        out_path.unlink()
    result = extract(model=model, module_names=modules, in_path=in_path, out_path=out_path,
                     file_format=file_format, batch_size=batch_size, num_workers=num_workers,
                     quiet=True, overwrite=True, **options)
    stages = ", ".join(f"{k} {v:.2f}" for k, v in result.stages.items())
    print(f"  {file_format} {out_path.stem}: {result.seconds:.2f} s; stages (s): {stages}", flush=True)
    with open_store(out_path) as store:
        layers = store.summary()["layers"]
    raw = sum(layer["bytes_raw"] for layer in layers.values())
    stored = sum(layer["bytes_stored"] for layer in layers.values())
    return result.seconds, result.rows_this_run, raw, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="128 images: a quick check")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", choices=["float16", "bfloat16"], default=None)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--decoder", choices=["pil", "torchvision"], default="pil")
    parser.add_argument("--compression", default=None, help="actstore's codec (default: its default)")
    parser.add_argument("--case", action="append", default=None, metavar="MODEL:MODULE[,MODULE]",
                        help="a model and its modules, repeatable (default: the three CPU cases)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated: zarr,hdf5")
    parser.add_argument("--stages", action="store_true",
                        help="also time decoding alone and the forward pass alone")
    args = parser.parse_args()
    cases = CASES if not args.case else [(c.split(":")[0], c.split(":")[1].split(",")) for c in args.case]
    formats = tuple(args.formats.split(","))
    options = dict(device=args.device, amp=args.amp, channels_last=args.channels_last, decoder=args.decoder)
    if args.compression:
        options["compression"] = args.compression
    same_model_options = dict(device=args.device, amp=args.amp, channels_last=args.channels_last)
    n = args.images or (128 if args.small else 512)
    repeats = args.repeats or 2

    in_path = make_images(n, size=256)
    images = ImageSet.scan(in_path)
    out_dir = SCRATCH / "extract-stores"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine(args.device)}")
    print(f"{n} JPEG images 256px, batch {args.batch_size}, {args.num_workers} decode workers, "
          f"{repeats} interleaved repeats, random weights; actstore options {options}\n")

    rows = []
    gpu_index = torch.device(args.device).index or 0
    for model_name, modules in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(model_name, weights="none")
        # Warm-up: first-touch allocations and oneDNN kernel selection.
        plain_loop(model, images.subset(range(min(n, 2 * args.batch_size))), args.batch_size, 0,
                   **same_model_options)
        if args.stages:
            decode = n / decode_only(model, images, args.batch_size, args.num_workers)
            forward = n / forward_only(model, n, args.batch_size, **same_model_options)
            print(f"{model_name}: decode alone {decode:.0f} img/s, forward pass alone {forward:.0f} img/s "
                  f"({'decode' if decode < forward else 'forward pass'} limits the plain loop)")
        times = {"plain": [], **{f: [] for f in formats}}
        cpu = {variant: [] for variant in times}
        util = {variant: [] for variant in times}
        sizes = {}
        for _ in range(repeats):
            cpu_before = cpu_seconds()
            with GpuUtilisation(gpu_index) as gpu:
                times["plain"].append(plain_loop(model, images, args.batch_size, args.num_workers,
                                                 **same_model_options))
            cpu["plain"].append(cpu_seconds() - cpu_before)
            util["plain"].append(gpu.mean)
            for file_format in formats:
                out = out_dir / f"{model_name}.{'zarr' if file_format == 'zarr' else 'h5'}"
                cpu_before = cpu_seconds()
                with GpuUtilisation(gpu_index) as gpu:
                    seconds, rows_done, raw, stored = actstore_run(
                        model, modules, in_path, out, file_format, args.batch_size, args.num_workers,
                        **options)
                cpu[file_format].append(cpu_seconds() - cpu_before)
                util[file_format].append(gpu.mean)
                assert rows_done == n
                times[file_format].append(seconds)
                sizes[file_format] = (raw, stored)
        plain, plain_cpu = median(times["plain"]), median(cpu["plain"])
        for file_format in formats:
            raw, stored = sizes[file_format]
            mid = median(times[file_format])
            rows.append([model_name, " + ".join(modules), file_format, f"{n / plain:.1f}",
                         f"{n / mid:.1f}", f"{plain / mid:.2f}",
                         f"{spread(times['plain'])} / {spread(times[file_format])}",
                         f"{1e3 * plain_cpu / n:.0f} / {1e3 * median(cpu[file_format]) / n:.0f}",
                         mb(raw), mb(stored), f"{raw / stored:.2f}",
                         f"{_percent(util['plain'])} / {_percent(util[file_format])}"])
        print(table(rows[-len(formats):], HEADER), "\n", flush=True)
    print("all cases:\n")
    print(table(rows, HEADER))
    shutil.rmtree(out_dir, ignore_errors=True)


def _percent(samples: list) -> str:
    samples = [s for s in samples if s is not None]
    return f"{median(samples):.0f}%" if samples else "-"


HEADER = ["model", "modules", "format", "plain img/s", "actstore img/s", "ratio",
          "spread plain/actstore", "CPU ms/img plain/actstore", "raw MB", "stored MB", "raw/stored",
          "GPU util plain/actstore"]

if __name__ == "__main__":
    main()
