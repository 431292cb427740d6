"""ImageSet: the ordered list of stimuli, their targets and classes.

The order fixed here is the row order of every store, so it must not depend
on the file system: classes sorted by name (or the THINGS concept order),
files sorted naturally inside a class (``img2`` before ``img10``).
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from . import config
from .errors import BadImagesError, BadOptionError
from .image_headers import sound_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
DEFAULT_THINGS_TSV = Path("data/things_concept.tsv")
# ImageSet.check: files per task of its process pool, which starts only for
# more than two such blocks: a spawned process costs 0.5-2 s to start (it
# imports actstore), a file 15-30 us to check (benchmarks/bench_setup.py), so
# processes pay off only for tens of thousands of files (ImageNet's 1.28M:
# ~30 s on one core). Threads per process, each taking runs of
# CHECK_THREAD_FILES, so that a network file system's latency overlaps.
CHECK_BLOCK_FILES = 32768
CHECK_THREADS = 8
CHECK_THREAD_FILES = 128


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value (``img2`` < ``img10``),
    ignoring case first and breaking ties by the exact name."""
    parts = [(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
             for part in re.split(r"(\d+)", name) if part != ""]
    return (parts, name)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


@dataclass(frozen=True)
class ImageSet:
    """Images in row order, with a target per image and the class names.

    ``file_names`` are relative to ``root`` with ``/`` separators. ``targets``
    are class indices for a class layout, image indices for a flat one (as the
    original THINGSvision tool did).

    Example:
        >>> images = ImageSet.scan("examples/images")       # doctest: +SKIP
        >>> images.file_names[0], images.targets[0]          # doctest: +SKIP
        ('cat/cat_01.png', 0)
    """

    root: Path
    file_names: tuple[str, ...]
    targets: tuple[int, ...]
    classes: tuple[str, ...] = ()
    fraction: float = 1.0
    rnd_seed: int | None = None
    layout: str = field(default="flat")

    def __len__(self) -> int:
        return len(self.file_names)

    @classmethod
    def scan(cls, in_path: str | Path, *, things: bool = False,
             things_tsv: str | Path | None = None, fraction: float = 1.0,
             rnd_seed: int | None = 42) -> "ImageSet":
        """Find the images under ``in_path``, detect the layout and fix the order.

        Raises:
            BadImagesError: missing or empty folder, mixed layout (BadOptionError: a bad ``fraction``),
                or (with ``things``) a missing TSV or folders that do not match it.
        """
        root = Path(in_path)
        if not root.exists():
            raise BadImagesError(f"in-path {root} does not exist: point --in-path at a folder of images")
        if not root.is_dir():
            raise BadImagesError(f"in-path {root} is not a folder: point --in-path at a folder of images")
        if not 0 < fraction <= 1:
            raise BadOptionError(f"--fraction must be in (0, 1], got {fraction}")

        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
        top_images = sorted((p for p in entries if is_image(p)), key=lambda p: natural_key(p.name))
        class_dirs = [p for p in entries if p.is_dir() and any(is_image(q) for q in p.iterdir())]

        if class_dirs and top_images:
            raise BadImagesError(f"in-path {root} mixes images ({top_images[0].name}) and class folders "
                            f"({class_dirs[0].name}/): use one layout")
        if class_dirs:
            if things:
                classes = _things_order(root, class_dirs, things_tsv)
            else:
                classes = sorted((d.name for d in class_dirs), key=natural_key)
            file_names, targets = [], []
            for index, name in enumerate(classes):
                files = sorted((p.name for p in (root / name).iterdir() if is_image(p)), key=natural_key)
                file_names += [f"{name}/{f}" for f in files]
                targets += [index] * len(files)
            layout = "classes"
        elif things:
            raise BadImagesError(f"--things needs one folder per concept under {root}, found none")
        else:
            classes = []
            file_names = [p.name for p in top_images]
            targets = list(range(len(file_names)))
            layout = "flat"
        if not file_names:
            raise BadImagesError(f"in-path {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")

        if fraction < 1:
            keep = _subset(len(file_names), fraction, rnd_seed)
            file_names = [file_names[i] for i in keep]
            targets = [targets[i] for i in keep]
        return cls(root=root, file_names=tuple(file_names), targets=tuple(targets),
                   classes=tuple(classes), fraction=fraction, rnd_seed=rnd_seed, layout=layout)

    def path(self, index: int) -> Path:
        return self.root / self.file_names[index]

    def load(self, index: int) -> Image.Image:
        """Decode one image to 8-bit RGB (grayscale, RGBA, palette, CMYK,
        16-bit and floating-point images all occur)."""
        with Image.open(self.path(index)) as image:
            if image.mode == "F":
                return _float_to_rgb(image, self.file_names[index])
            return image.convert("RGB") if image.mode not in ("I;16", "I;16B", "I;16L", "I") \
                else _wide_to_rgb(image)

    def check(self, workers: int | None = None) -> list[tuple[int, str]]:
        """Cheaply find images that would fail or mislead, before any heavy work.

        Reads headers (and PNG checksums, and the end of each JPEG) instead of
        decoding: zero-byte files, non-images with an image extension,
        truncated files, decompression-bomb-sized images. Sound JPEGs and
        PNGs are read without Pillow (:mod:`.image_headers`); a set of more
        than ``2 * CHECK_BLOCK_FILES`` is checked on ``workers`` processes
        (default: every usable core), whose start pays off only there.

        Returns:
            ``(row, reason)`` for every bad image, in row order.
        """
        paths = [str(self.path(row)) for row in range(len(self))]
        blocks = [paths[i:i + CHECK_BLOCK_FILES] for i in range(0, len(paths), CHECK_BLOCK_FILES)]
        workers = min(len(blocks), workers or config.usable_cores())
        if workers > 1 and len(blocks) > 2:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                reasons = [r for block in pool.map(_problems, blocks, itertools.repeat(Image.MAX_IMAGE_PIXELS))
                           for r in block]
        else:
            reasons = _problems(paths, Image.MAX_IMAGE_PIXELS)
        return [(row, reason) for row, reason in enumerate(reasons) if reason]

    def without(self, rows: Sequence[int]) -> "ImageSet":
        """The set minus ``rows``; targets keep their values."""
        drop = set(rows)
        return self.subset([i for i in range(len(self)) if i not in drop])

    def digest(self) -> str:
        """SHA-256 of the ordered file names and targets: part of a store's fingerprint."""
        payload = json.dumps([self.file_names, self.targets, self.classes]).encode()
        return hashlib.sha256(payload).hexdigest()

    def subset(self, rows: Sequence[int]) -> "ImageSet":
        return ImageSet(root=self.root, file_names=tuple(self.file_names[i] for i in rows),
                        targets=tuple(self.targets[i] for i in rows), classes=self.classes,
                        fraction=self.fraction, rnd_seed=self.rnd_seed, layout=self.layout)


def _problems(paths: Sequence[str], max_pixels: int | None) -> list[str]:
    """:func:`_problem` of each path, in runs of ``CHECK_THREAD_FILES`` on
    threads: a network file system's latency overlaps, and on a local disk
    they cost little (one task per run, not per file). ``max_pixels`` is the
    caller's ``Image.MAX_IMAGE_PIXELS``, which a worker process does not share."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    runs = [paths[i:i + CHECK_THREAD_FILES] for i in range(0, len(paths), CHECK_THREAD_FILES)]
    with ThreadPoolExecutor(max_workers=CHECK_THREADS) as pool:
        return [reason for run in pool.map(lambda run: list(map(_problem, run)), runs) for reason in run]


def _problem(path: str | Path) -> str:
    """Why ``path`` cannot be used as an image, or "" when it can."""
    try:
        with open(path, "rb") as handle:
            size = sound_size(handle)
            if size is not None and not (Image.MAX_IMAGE_PIXELS and size[0] * size[1] > Image.MAX_IMAGE_PIXELS):
                return ""
            if os.fstat(handle.fileno()).st_size == 0:
                return "empty file (0 bytes)"
    except OSError as error:
        return f"unreadable ({error.strerror})"
    return _pillow_problem(Path(path))


def _pillow_problem(path: Path) -> str:
    """What Pillow finds wrong with a non-empty file, or ""."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
                    return f"decompression-bomb-sized ({width}x{height} pixels)"
                if image.format == "PNG":
                    image.verify()   # chunk checksums, without decoding
                elif image.format == "JPEG" and not _jpeg_ends(path):
                    image.load()     # no end marker: decode to be sure it is truncated
    except Image.DecompressionBombError as error:
        return f"decompression-bomb-sized ({str(error).split('(')[0].strip()})"
    except Image.UnidentifiedImageError:
        return "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError) as error:
        return f"broken or truncated ({str(error)[:80]})"
    return ""


def _jpeg_ends(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 1024))
        return b"\xff\xd9" in handle.read()


def _wide_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's convert("RGB") clips 16/32-bit integer images instead of scaling them.
    array = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
    gray = np.clip(np.round(array / top * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def _float_to_rgb(image: Image.Image, name: str) -> Image.Image:
    """A 32-bit float image (TIFF mode F). Pillow's convert("RGB") clips it, so
    an image in [0, 1] came out black: values in [0, 1] are scaled to 0-255,
    values in [0, 255] kept; any other range is refused rather than guessed."""
    array = np.asarray(image, dtype=np.float64)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise ValueError(f"{name} is a floating-point image with values in [{low:g}, {high:g}]; "
                         "only [0, 1] and [0, 255] have an unambiguous 8-bit meaning: convert it to 8-bit")
    scale = 255.0 if high <= 1.0 else 1.0
    gray = np.clip(np.round(array * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def _subset(n: int, fraction: float, seed: int | None) -> np.ndarray:
    """Random rows, in their original order, so the store stays sorted.
    ``int(n * fraction)`` of them, as the original tool took."""
    k = max(1, math.floor(n * fraction))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False))


def _things_order(root: Path, class_dirs: list[Path], things_tsv: str | Path | None) -> list[str]:
    tsv = Path(things_tsv) if things_tsv is not None else DEFAULT_THINGS_TSV
    if not tsv.is_file():
        raise BadImagesError(f"THINGS concept file {tsv} not found: pass --things-tsv PATH to things_concept.tsv")
    with tsv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if not reader.fieldnames or "uniqueID" not in reader.fieldnames:
            raise BadImagesError(f"THINGS concept file {tsv} has no uniqueID column")
        concepts = [row["uniqueID"].strip() for row in reader if row["uniqueID"].strip()]
    folders = {d.name for d in class_dirs}
    extra = sorted(folders - set(concepts))
    if extra:
        raise BadImagesError(f"folders under {root} do not match {tsv}: {len(extra)} folders not in "
                        f"{tsv.name} (e.g. {', '.join(extra[:3])}); remove them or use --things-tsv "
                        "with a file that lists them")
    present = [c for c in concepts if c in folders]
    if len(present) < len(concepts):
        # A subset of THINGS (a pilot, a category) is a normal run: THINGS order, targets
        # indexing the concepts present.
        warnings.warn(f"{len(concepts) - len(present)} of the {len(concepts)} concepts in {tsv.name} "
                      f"have no folder under {root}; extracting the {len(present)} present, in THINGS order",
                      stacklevel=3)
    return present
