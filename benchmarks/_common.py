"""Helpers shared by the benchmarks: generated images, timing, peak RSS, tables.

Every benchmark runs from a checkout (``python benchmarks/NAME.py``), so the
repository root is put on ``sys.path`` here. Generated images and stores live
under the system temp folder, never in the repository.
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SCRATCH = Path(tempfile.gettempdir()) / "actstore-bench"


def make_images(n: int, size: int = 256, seed: int = 0, quality: int = 90) -> Path:
    """A folder of ``n`` JPEGs that compress and activate like photographs:
    smooth colour fields (upsampled low-resolution noise), a gradient, a few
    edges and a little grain. Reused when it already exists."""
    folder = SCRATCH / f"images-{n}-{size}px-s{seed}-b256"
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    # Blocks of images with their own seeds, made on every core: the same
    # files whatever the core count.
    blocks = [(folder, start, min(start + 256, n), size, seed, quality) for start in range(0, n, 256)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_make_image_block, blocks))
    done.touch()
    return folder


def _make_image_block(job: tuple) -> None:
    from PIL import Image
    folder, start, stop, size, seed, quality = job
    rng = np.random.default_rng([seed, start])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(start, stop):
        coarse = rng.random((rng.integers(3, 12), rng.integers(3, 12), 3)).astype(np.float32)
        field = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize(
            (size, size), Image.BICUBIC), dtype=np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        gradient = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] * rng.uniform(-80, 80, 3)
        edges = ((np.sin(xx * rng.uniform(5, 40)) > 0.7) * rng.uniform(-60, 60))[..., None]
        grain = rng.normal(0, 6, (size, size, 3))
        pixels = np.clip(field + gradient + edges + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:05d}.jpg", quality=quality)


def cpu_name() -> str:
    """The CPU's model name as ``lscpu`` prints it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def machine(device: str = "cpu") -> str:
    import torch
    gpu = "no GPU used"
    if device.startswith("cuda"):
        gpu = f"GPU {torch.cuda.get_device_name(torch.device(device))}"
    return (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}, {gpu}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """min-max as a percentage of the median: the noise of a repeated figure."""
    mid = statistics.median(values)
    return f"{100 * (max(values) - min(values)) / mid:.0f}%" if mid else "-"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children
    (DataLoader workers are reaped when a loader finishes). Less sensitive to
    other load on the machine than wall time."""
    import resource
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def dir_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remove(path: Path) -> None:
    """Delete a store (directory) or file if it is there."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:,.1f}"


def table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    """A GitHub-markdown table, readable in a terminal too."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, cells[1:])])


class PeakRss:
    """Polls the resident memory of a process and all its children (DataLoader
    workers included) until stopped.

    ``peak_tree`` sums RSS over the tree, so pages the forked workers share
    with the parent count more than once: an upper bound. ``peak_main`` is
    the main process alone.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil
        self._psutil = psutil
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak_tree = 0
        self.peak_main = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        psutil = self._psutil
        while not self._stop.is_set():
            try:
                main = self.process.memory_info().rss
                tree = main
                for child in self.process.children(recursive=True):
                    try:
                        tree += child.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                break
            self.peak_main = max(self.peak_main, main)
            self.peak_tree = max(self.peak_tree, tree)
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(cmd: Sequence[str], env: dict | None = None) -> dict:
    """Run ``cmd`` as a subprocess; its wall time, exit code, output tail and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, cwd=REPO, text=True)
    monitor = PeakRss(proc.pid)
    output, _ = proc.communicate()
    monitor.stop()
    return {"seconds": time.perf_counter() - started, "returncode": proc.returncode,
            "output": output[-2000:], "peak_tree": monitor.peak_tree, "peak_main": monitor.peak_main}


class GpuUtilisation:
    """Mean GPU utilisation (percent, as nvidia-smi reports it) sampled every
    0.1 s while the block runs; None where NVML is not installed.

    Example:
        >>> with GpuUtilisation(0) as util: run()          # doctest: +SKIP
        >>> util.mean
    """

    def __init__(self, index: int = 0, interval: float = 0.1) -> None:
        self.index, self.interval, self.samples = index, interval, []
        self._stop = threading.Event()

    def __enter__(self) -> "GpuUtilisation":
        try:
            import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception:   # no NVML library or no GPU: nothing to sample
            self._thread = None
            return self

        def poll() -> None:
            while not self._stop.wait(self.interval):
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None
