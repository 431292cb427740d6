"""Extractor and the batch loop: images -> model -> store, one mini-batch at a time.

Decoding runs in DataLoader workers; the model runs in the main thread; a
background thread compresses and writes finished batches, fed through a
bounded queue, so memory stays at a few batches whatever the image count.
"""
from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import errno
import hashlib
import json
import math
import os
import queue
import re
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import __version__, defaults
from .errors import UserError
from .images import ImageSet
from .capture import Extractor
from .models import Model, load_model, suggest
from .plan import Plan, free_space, human_size, measure
from .store import (COMPRESSIONS, DTYPES, FORMAT_NAME, FORMAT_VERSION, LEGACY_FORMATS,
                    STORE_SUFFIXES, LayerSpec, Layout, Location, StoreWriter, choose_chunks,
                    choose_shard_rows, create_writer, detect_format, exists, is_store, join, location,
                    remove_store, reopen_writer, suffix, writer_class)


def resolve_device(device: str) -> torch.device:
    """The torch device for ``device``, refusing one that is not there."""
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise UserError(f"unknown --device {device!r}: use cpu, cuda or cuda:N") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: MPS is not available here; use --device cpu")
    return resolved


DECODERS = ("pil", "torchvision")


class _ImageRows(Dataset):
    """Images by row: decoded and preprocessed (Pillow), or, for the
    torchvision decoder, the file's bytes, decoded later on the model's
    device. A bad image becomes an error string instead of an exception, so
    the main process can name it."""

    def __init__(self, images: ImageSet, transform: Callable, decoder: str = "pil") -> None:
        self.images, self.transform, self.decoder = images, transform, decoder

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int):
        try:
            if self.decoder == "torchvision":   # plain bytes: they cross process boundaries cheaply
                return self.images.path(row).read_bytes(), row, ""
            return self.transform(self.images.load(row)), row, ""
        except Exception as error:  # any decoder failure names the file
            return None, row, f"{type(error).__name__}: {error}"


def _collate(items):
    good = [(x, row) for x, row, err in items if not err]
    bad = [(row, err) for _x, row, err in items if err]
    # Pillow-decoded images stack into a batch; raw file bytes stay a list.
    if good and isinstance(good[0][0], bytes):
        batch = [x for x, _ in good]
    else:
        batch = torch.stack([x for x, _ in good]) if good else None
    return batch, np.array([row for _, row in good], dtype=np.int64), bad


def _decode_batch(files: list[bytes], names: list[str], transform: Callable,
                  device: torch.device) -> torch.Tensor:
    """torchvision decoding: JPEGs decoded together on ``device`` (nvJPEG on a
    GPU), other formats on the CPU; then the transform runs on the tensors."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    data = [torch.frombuffer(bytearray(f), dtype=torch.uint8) for f in files]
    jpeg = [i for i, name in enumerate(names) if name.lower().endswith((".jpg", ".jpeg"))]
    decoded: list[torch.Tensor | None] = [None] * len(data)
    try:
        if jpeg:
            for i, image in zip(jpeg, decode_jpeg([data[i] for i in jpeg], device=device,
                                                  mode=ImageReadMode.RGB)):
                decoded[i] = image
        for i, image in enumerate(decoded):
            if image is None:
                decoded[i] = decode_image(data[i], mode=ImageReadMode.RGB).to(device)
    except RuntimeError as error:
        raise UserError(f"--decoder torchvision could not decode an image of this batch ({error}); "
                        "use the default --decoder pil") from error
    try:
        return torch.stack([transform(image) for image in decoded])
    except (TypeError, AttributeError) as error:
        raise UserError("--decoder torchvision needs a transform that takes image tensors "
                        f"(torchvision's weights transforms do): {error}") from error


class _RowBuffer:
    """Gathers batches into blocks that end on write-block boundaries
    (``Layout.write_rows``: Zarr shards, else chunks), so every write fills
    whole shards or chunks (no read-modify-write, none shared between
    processes). It holds at most one write block of every layer, plus a batch."""

    def __init__(self, chunk_images: int, n_rows: int) -> None:
        self.chunk, self.n_rows = chunk_images, n_rows
        self.start: int | None = None
        self.parts: list[dict[str, np.ndarray]] = []
        self.length = 0

    def add(self, rows: np.ndarray, arrays: Mapping[str, np.ndarray]):
        for run in np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows) != 1) + 1):
            if not len(run):
                continue
            first = int(rows[run[0]])
            if self.start is not None and first != self.start + self.length:
                yield from self.flush()
            if self.start is None:
                self.start = first
            self.parts.append({k: v[run[0]:run[-1] + 1] for k, v in arrays.items()})
            self.length += len(run)
            end = self.start + self.length
            aligned = end if end == self.n_rows else end - end % self.chunk
            if aligned > self.start:
                yield from self._emit(aligned - self.start)

    def flush(self):
        if self.length:
            yield from self._emit(self.length)

    def own(self) -> None:
        """Copy the rows held back for the next block out of the arrays they
        came from, so those can be reused."""
        self.parts = [{k: v if v.base is None else v.copy() for k, v in part.items()}
                      for part in self.parts]

    def _emit(self, count: int):
        block = self.parts[0] if len(self.parts) == 1 else \
            {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        yield self.start, {k: v[:count] for k, v in block.items()}
        rest = self.length - count
        self.parts = [{k: v[count:] for k, v in block.items()}] if rest else []
        self.start = self.start + count if rest else None
        self.length = rest


class _BackgroundWriter:
    """A thread that writes queued batches; errors surface in the main thread."""

    def __init__(self, writer: StoreWriter, chunk_images: int, n_rows: int, progress) -> None:
        self.writer, self.progress = writer, progress
        self.buffer = _RowBuffer(chunk_images, n_rows)
        self.queue: queue.Queue = queue.Queue(maxsize=defaults.WRITE_QUEUE_BATCHES)
        self.error: BaseException | None = None
        self.rows_written = 0
        self.thread = threading.Thread(target=self._loop, name="actstore-writer", daemon=True)
        self.thread.start()

    def put(self, rows: np.ndarray, keep: np.ndarray, batch: "_HostBatch") -> None:
        """Queue a batch; only rows where ``keep`` is set are written. Its
        buffers go back to their pool once written."""
        while True:
            self.raise_error()
            try:
                self.queue.put((rows, keep, batch), timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.raise_error()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _write(self, blocks) -> None:
        for start, block in blocks:
            self.writer.write_rows(start, block)
            count = len(next(iter(block.values())))
            self.rows_written += count
            self.progress.update(count)

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                break
            if self.error is not None:
                continue  # drain so the producer never blocks
            try:
                rows, keep, batch = item
                arrays = batch.arrays()
                if not keep.all():
                    rows, arrays = rows[keep], {k: v[keep] for k, v in arrays.items()}
                self._write(self.buffer.add(rows, arrays))
                self.buffer.own()   # rows kept for the next block no longer point into the batch
                batch.release()
            except BaseException as error:  # re-raised in the main thread
                self.error = error
        if self.error is None:
            try:
                self._write(self.buffer.flush())
            except BaseException as error:
                self.error = error


@dataclass
class ExtractResult:
    """What a run did: where the store is and how many rows it holds."""

    path: Path
    file_format: str
    n_images: int
    rows_written: int
    rows_this_run: int
    seconds: float
    layers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    resumed: bool = False
    shard: tuple[int, int] | None = None
    shard_rows: tuple[int, int] | None = None
    plan: Plan | None = None

    @property
    def complete(self) -> bool:
        return self.rows_written == self.n_images


class Interrupted(UserError):
    """Ctrl-C: what was finished is kept; rerunning the command resumes."""


def fingerprint(model: Model, images: ImageSet, layout: Layout, flatten: bool, *,
                amp: str | None = None, channels_last: bool = False,
                decoder: str = "pil") -> dict[str, Any]:
    """Everything that determines a store's contents. A rerun must match it to resume."""
    return {
        "format_version": FORMAT_VERSION,
        "model_name": model.name, "weights": model.weights, "weights_sha256": model.weights_sha256,
        "preprocessing": model.preprocessing,
        "layers": [spec.module_name for spec in layout.layers],
        "shapes": {spec.module_name: list(spec.shape) for spec in layout.layers},
        "chunks": {spec.module_name: list(spec.chunks) for spec in layout.layers},
        "dtype": layout.layers[0].dtype, "flatten": flatten, "amp": amp, "channels_last": channels_last,
        "decoder": decoder,
        "compression": layout.compression, "compression_level": layout.compression_level,
        "images_sha256": images.digest(), "n_images": len(images),
        "rnd_seed": images.rnd_seed, "fraction": images.fraction,
    }


def _fingerprint_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(current))
    return [f"{k} (store: {json.dumps(stored.get(k))[:60]}, now: {json.dumps(current.get(k))[:60]})"
            for k in keys if stored.get(k) != current.get(k)]


def extract(*, in_path: str | Path, out_path: str | Path, module_names: Sequence[str],
            model_name: str | None = None, model: Model | None = None,
            model_path: str | Path | None = None, weights: str | None = "DEFAULT",
            batch_size: int = defaults.BATCH_SIZE, device: str = "cpu", flatten_acts: bool = False,
            fraction: float = 1.0, rnd_seed: int = 42, things: bool = False,
            things_tsv: str | Path | None = None, file_format: str | None = None,
            dtype: str = "float32", compression: str = defaults.COMPRESSION,
            compression_level: int | None = None, chunk_images: int = defaults.CHUNK_IMAGES,
            chunk_channels: int | None = None, zarr_shard_rows: int | None = None,
            num_workers: int | None = None,
            skip_bad_images: bool = False, shard: str | tuple[int, int] | None = None,
            dry_run: bool = False, force: bool = False, amp: str | None = None,
            channels_last: bool = False, decoder: str = "pil", overwrite: bool = False, quiet: bool = False,
            command_line: str | None = None) -> ExtractResult:
    """Extract ``module_names`` of a model for every image under ``in_path`` into one store.

    Pass ``model_name`` (a torchvision model, weights from ``model_path`` or
    ``weights``) or a ready ``model`` (see :func:`actstore.models.from_module`).
    Running again on an incomplete store from the same configuration resumes it.
    Images are checked cheaply first: bad ones stop the run before anything is
    written, naming each, unless ``skip_bad_images`` leaves them out (and
    records them in the store's ``skipped_images`` attribute).

    ``shard="I/N"`` makes this process extract only its share of the rows
    (whole chunks) into the same store; under ``torchrun`` the share and the
    CUDA device come from ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``.

    ``dry_run`` writes nothing and returns the :class:`~actstore.plan.Plan` in
    ``result.plan``. A run whose measured size estimate exceeds the free space
    refuses to start unless ``force``.

    Returns:
        An :class:`ExtractResult`.

    Raises:
        UserError: any input a user can fix, with a one-line message.

    Example:
        >>> extract(model_name="alexnet", module_names=["features.11", "classifier.4"],
        ...         in_path="images", out_path="alexnet.zarr")                  # doctest: +SKIP
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if chunk_images < 1:
        raise UserError(f"--chunk-images must be at least 1, got {chunk_images}")
    if dtype not in DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if compression not in COMPRESSIONS:
        raise UserError(f"unknown --compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    if num_workers is not None and num_workers < 0:
        raise UserError(f"--num-workers must be 0 or more, got {num_workers}")
    amp = None if amp in (None, "", "none") else amp
    if amp is not None and amp not in AMP_DTYPES:
        raise UserError(f"unknown --amp {amp!r}: use none, {', '.join(AMP_DTYPES)}")
    if decoder not in DECODERS:
        raise UserError(f"unknown --decoder {decoder!r}: use one of {', '.join(DECODERS)}")
    shard_index, shard_count, device = _shard_and_device(shard, device)
    torch_device = resolve_device(device)
    if num_workers is None:
        num_workers = defaults.num_workers(torch_device.type)
    out_path = location(out_path)
    if file_format is None and not is_store(out_path) and suffix(out_path) not in STORE_SUFFIXES:
        # The original extract.py's default: old job scripts keep working unchanged.
        warnings.warn(f"out path {out_path} has no store suffix ({', '.join(STORE_SUFFIXES)}): writing "
                      "the original THINGSvision text layout <out>/<model>/<module>/activations.txt; "
                      "use a path ending in .zarr or .h5 (or --file-format zarr) for a store",
                      stacklevel=2)
        file_format = "txt"
    file_format = detect_format(out_path, file_format)
    if shard_count > 1:
        if file_format in LEGACY_FORMATS or not writer_class(file_format).supports_concurrent_writers:
            raise UserError(f"--shard needs a Zarr store: {file_format} has no safe concurrent "
                            "writers; use an out path ending in .zarr")
        if overwrite:
            raise UserError("--overwrite cannot be combined with --shard (each process would delete "
                            "the others' rows): remove the old store once, then start the shards")
    images = ImageSet.scan(in_path, things=things, things_tsv=things_tsv,
                           fraction=fraction, rnd_seed=rnd_seed)
    bad = images.check()
    skipped = [{"file_name": images.file_names[row], "reason": reason} for row, reason in bad]
    if bad and not skip_bad_images:
        listed = "; ".join(f"{s['file_name']}: {s['reason']}" for s in skipped[:10])
        more = f" (+{len(bad) - 10} more)" if len(bad) > 10 else ""
        raise UserError(f"{len(bad)} bad image(s) under {in_path}: {listed}{more}; fix or remove "
                        "them, or pass --skip-bad-images to leave them out")
    if bad:
        images = images.without([row for row, _ in bad])
        if not len(images):
            raise UserError(f"every image under {in_path} is bad; nothing to extract")
    if model is None:
        if not model_name:
            raise UserError("no model given: pass --model-name (see `actstore models`)")
        model = load_model(model_name, weights=weights, model_path=model_path, seed=rnd_seed)
    model.module.to(torch_device)
    if channels_last:
        model.module.to(memory_format=torch.channels_last)
    extractor = Extractor(model.module, module_names)
    probe = torch.zeros(1, 3, *model.input_size, device=torch_device)
    shapes = extractor.probe(probe)
    itemsize = np.dtype(dtype).itemsize
    specs = []
    for name in module_names:
        native = shapes[name]
        stored = (math.prod(native),) if flatten_acts else native
        specs.append(LayerSpec(module_name=name, shape=stored, native_shape=native, dtype=dtype,
                               chunks=choose_chunks(stored, itemsize, chunk_images, chunk_channels)))
    layout = Layout(n_rows=len(images), layers=tuple(specs), chunk_images=chunk_images,
                    compression=compression, compression_level=compression_level,
                    shard_rows=choose_shard_rows(file_format, specs, len(images), chunk_images, zarr_shard_rows))
    lo, hi = shard_rows(len(images), layout.write_rows, shard_index, shard_count)
    plan = _check_space(extractor, model, images, layout, file_format, out_path, hi - lo, torch_device,
                        dtype=dtype, flatten=flatten_acts, dry_run=dry_run, force=force, amp=amp,
                        channels_last=channels_last)
    if dry_run:
        return ExtractResult(path=out_path, file_format=file_format, n_images=len(images),
                             rows_written=0, rows_this_run=0, seconds=time.perf_counter() - started,
                             layers={s.module_name: s.shape for s in layout.layers}, plan=plan)
    current = fingerprint(model, images, layout, flatten_acts, amp=amp, channels_last=channels_last,
                          decoder=decoder)
    writer, resumed = _open_or_create(out_path, file_format, layout, images, model, current,
                                      overwrite=overwrite, device=str(torch_device),
                                      command_line=command_line, things=things, flatten=flatten_acts,
                                      skipped=skipped)
    try:
        # A store opened again keeps its own write blocks (one written before shards: chunks).
        lo, hi = shard_rows(len(images), writer.block_rows or layout.write_rows, shard_index, shard_count)
        if writer.supports_resume:
            _claim(writer, out_path, shard_index, shard_count, lo, hi)
        todo = np.flatnonzero(~writer.written()[lo:hi]) + lo
        done_before = (hi - lo) - len(todo)
        try:
            rows_this_run = _run(extractor, model, images, todo, writer, layout, torch_device,
                                 batch_size=batch_size, num_workers=num_workers, dtype=dtype,
                                 flatten=flatten_acts, quiet=quiet, done_before=done_before,
                                 total=hi - lo, label="extract" if shard_count == 1 else
                                 f"shard {shard_index}/{shard_count}", amp=amp,
                                 channels_last=channels_last, decoder=decoder)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise
            kept = int(writer.written().sum()) if writer.supports_resume else 0
            raise UserError(f"out of disk space writing {out_path} ({error.strerror}): {kept} of "
                            f"{len(images)} rows are kept; free space and run the same command "
                            "again to resume") from error
        written = writer.written()
        if written.all():
            writer.update_attrs({"status": "complete",
                                 "completed": _dt.datetime.now(_dt.timezone.utc).isoformat()})
    finally:
        writer.close()
    return ExtractResult(path=out_path, file_format=file_format, n_images=len(images),
                         rows_written=int(written.sum()), rows_this_run=rows_this_run,
                         seconds=time.perf_counter() - started,
                         layers={s.module_name: s.shape for s in layout.layers}, resumed=resumed,
                         shard=(shard_index, shard_count) if shard_count > 1 else None,
                         shard_rows=(lo, hi))


def _open_or_create(out_path: Location, file_format: str, layout: Layout, images: ImageSet, model: Model,
                    current: dict, *, overwrite: bool, device: str, command_line: str | None,
                    things: bool, flatten: bool, skipped: list[dict]) -> tuple[StoreWriter, bool]:
    attrs = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "actstore_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        **model.provenance(),
        "dtype": layout.layers[0].dtype, "compression": layout.compression,
        "compression_level": layout.compression_level, "chunk_images": layout.chunk_images,
        "flatten_acts": flatten,
        "torch_version": str(torch.__version__), "torchvision_version": str(torchvision.__version__),
        "device": device, "torch_threads": torch.get_num_threads(), "amp": current["amp"],
        "rnd_seed": images.rnd_seed, "fraction": images.fraction,
        "in_path": str(Path(images.root).resolve()), "image_layout": images.layout,
        "things": things, "n_images": len(images), "skipped_images": skipped,
        "command_line": command_line or " ".join(sys.argv),
        "status": "incomplete",
        "fingerprint": current,
        "fingerprint_sha256": hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest(),
    }
    if file_format in LEGACY_FORMATS:
        # The original tool's folder of txt/npy files: written afresh, never resumed.
        return create_writer(out_path, file_format, layout, images.file_names, images.targets,
                             images.classes, {**attrs, "overwrite": overwrite}), False
    if exists(out_path):
        if not is_store(out_path):
            empty_dir = isinstance(out_path, Path) and out_path.is_dir() and not any(out_path.iterdir())
            if not empty_dir:
                raise UserError(f"out path {out_path} exists and is not an actstore store; nothing was "
                                f"changed: choose a new path such as {join(out_path, 'store.zarr')}")
            out_path.rmdir()
        elif overwrite:
            remove_store(out_path)
        else:
            return _reopen_same_run(out_path, current), True
    if isinstance(out_path, Path):
        out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer = create_writer(out_path, file_format, layout, images.file_names, images.targets,
                               images.classes, attrs)
    except FileExistsError:   # another shard created it first: join it
        return _reopen_same_run(out_path, current), True
    return writer, False


def _check_space(extractor: Extractor, model: Model, images: ImageSet, layout: Layout, file_format: str,
                 out_path: Location, rows: int, device: torch.device, *, dtype: str, flatten: bool,
                 dry_run: bool, force: bool, amp: str | None = None, channels_last: bool = False) -> Plan | None:
    """Measure the plan for a dry run, or when the raw size alone would not fit.
    The sample runs with the run's --amp and --channels-last (reduced-precision
    outputs compress far better), decoded by Pillow whatever the --decoder."""
    if file_format in LEGACY_FORMATS and not dry_run:
        return None
    free = free_space(out_path)
    raw = rows * sum(spec.bytes_per_image for spec in layout.layers)
    if not dry_run and (free is None or raw <= free):
        return None

    def forward(rows_: np.ndarray) -> dict[str, np.ndarray]:
        batch = torch.stack([model.transform(images.load(int(r))) for r in rows_]).to(device)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        out = _HostBuffers(torch.device("cpu"), len(rows_), dtype, flatten).take()
        with _autocast(device, amp):
            extractor(batch, into=out.fill)   # cast and shaped as the run stores them
        return out.arrays()

    plan = measure(forward, images, layout, "zarr" if file_format in LEGACY_FORMATS else file_format,
                   rows, free)
    if not dry_run and not plan.fits and not force:
        raise UserError(f"the store needs about {human_size(plan.estimated_bytes)} but {out_path} has "
                        f"{human_size(plan.free_bytes)} free: free space, choose another --out-path, or "
                        "pass --force to start anyway")
    return plan


AMP_DTYPES = ("float16", "bfloat16")


def _autocast(device: torch.device, amp: str | None):
    """Mixed precision for the forward pass (``--amp``), or nothing."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, amp))


class _HostBatch:
    """One batch's activations in host memory that is reused from batch to
    batch (see :class:`_HostBuffers`), in the stored dtype and shape."""

    def __init__(self, pool: "_HostBuffers") -> None:
        self.pool, self.size = pool, 0
        self.buffers: dict[str, torch.Tensor] = {}
        self.done: torch.cuda.Event | None = None

    def target(self, name: str, output: torch.Tensor) -> torch.Tensor:
        """This batch's buffer for ``output``, viewed in its shape."""
        self.size = len(output)
        stored = (self.pool.batch_size, *output.shape[1:])
        if self.pool.flatten:
            stored = (self.pool.batch_size, math.prod(output.shape[1:]))
        buffer = self.buffers.get(name)
        if buffer is None or tuple(buffer.shape) != stored:
            buffer = self.buffers[name] = torch.empty(stored, dtype=self.pool.dtype,
                                                      pin_memory=self.pool.pinned)
        return buffer[:len(output)].view(output.shape)

    def fill(self, name: str, output: torch.Tensor) -> torch.Tensor:
        """Copy a CPU output in (the Extractor's ``into``), casting to the stored dtype."""
        return self.target(name, output).copy_(output)

    def fill_from_device(self, outputs: dict[str, torch.Tensor], stream: torch.cuda.Stream) -> None:
        """Copy device outputs in on ``stream``, without waiting for them."""
        stream.wait_stream(torch.cuda.current_stream(stream.device))
        with torch.cuda.stream(stream):
            for name, out in outputs.items():
                out.record_stream(stream)   # read here: not to be reused before this stream is done
                out = out.to(self.pool.dtype)   # on the device: float16 halves the copy
                self.target(name, out).copy_(out, non_blocking=True)
            self.done = torch.cuda.Event()
            self.done.record(stream)

    def arrays(self) -> dict[str, np.ndarray]:
        """The activations as NumPy views, once any device copy has finished."""
        if self.done is not None:
            self.done.synchronize()
        return {name: buffer[:self.size].numpy() for name, buffer in self.buffers.items()}

    def release(self) -> None:
        self.done = None
        self.pool.free.append(self)


class _HostBuffers:
    """Host memory for activations on their way to the writer, reused.

    A fresh array per batch is as costly as the copy into it (large
    allocations are mapped anew, so every page faults in again), and on CUDA
    pinned memory is slow to allocate. Batches go back on a free list once
    written; the write queue bounds how many exist. On CUDA the buffers are
    pinned and filled by non-blocking copies on a side stream, so the next
    forward pass is not serialised behind the copy.
    """

    def __init__(self, device: torch.device, batch_size: int, dtype: str, flatten: bool) -> None:
        self.batch_size, self.dtype, self.flatten = batch_size, getattr(torch, dtype), flatten
        self.pinned = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.pinned else None
        self.free: collections.deque[_HostBatch] = collections.deque()   # thread-safe appends/pops

    def take(self) -> _HostBatch:
        try:
            return self.free.pop()
        except IndexError:
            return _HostBatch(self)


def _reopen_same_run(out_path: Location, current: dict) -> StoreWriter:
    writer = reopen_writer(out_path)
    stored = writer.root_attrs().get("fingerprint", {})
    differences = _fingerprint_differences(stored, current)
    if differences:
        writer.close()
        keys = ", ".join(d.split(" ")[0] for d in differences)
        raise UserError(f"out path {out_path} holds a store from a different run ({keys} "
                        f"differ: {differences[0]}); pass --overwrite to replace it "
                        "or choose another --out-path")
    return writer


def _shard_and_device(shard: str | tuple[int, int] | None, device: str) -> tuple[int, int, str]:
    """This process's share (index, count) and device; torchrun's variables
    stand in for ``--shard`` when it is not given."""
    if shard is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            shard = (int(os.environ.get("RANK", "0")), world)
            if device == "cuda":
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        else:
            shard = (0, 1)
    if isinstance(shard, str):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if not match:
            raise UserError(f"--shard {shard!r} is not I/N (e.g. 0/4 for the first of four processes)")
        shard = (int(match[1]), int(match[2]))
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {index}/{count}: I must be in 0..N-1")
    return index, count, device


def shard_rows(n_rows: int, chunk_images: int, index: int, count: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``index`` of ``count``: whole write blocks
    (``chunk_images``: pass ``Layout.write_rows``, Zarr shard rows or chunk rows),
    so no two processes ever write the same chunk, Zarr shard or ``written`` chunk.

    Example:
        >>> shard_rows(100, 16, 1, 3)      # 7 chunks split 2/2/3
        (32, 64)
    """
    chunks = math.ceil(n_rows / chunk_images)
    lo, hi = index * chunks // count, (index + 1) * chunks // count
    return min(lo * chunk_images, n_rows), min(hi * chunk_images, n_rows)


def _claim(writer: StoreWriter, out_path: Location, index: int, count: int, lo: int, hi: int) -> None:
    """Record this shard in the store, refusing a layout that overlaps other
    processes' (shards of another count): their rows would be lost."""
    def others() -> list[str]:
        return sorted(name for name in writer.claims() if not name.endswith(f"-of-{count}"))

    def refuse(found: list[str]) -> None:
        their = int(found[0].split("-of-")[1])
        raise UserError(f"{out_path} is being written as {their} shard(s) ({', '.join(found[:4])}); "
                        f"rows {lo}-{hi - 1} of shard {index}/{count} would overlap theirs: run every "
                        f"process with --shard I/{their}")

    if others():
        refuse(others())
    name = f"{index}-of-{count}"
    writer.add_claim(name, {"rows": [lo, hi], "host": socket.gethostname(), "pid": os.getpid(),
                            "claimed": _dt.datetime.now(_dt.timezone.utc).isoformat()})
    if others():   # another layout claimed at the same moment: both step back
        writer.remove_claim(name)
        refuse(others())


def _run(extractor: Extractor, model: Model, images: ImageSet, todo: np.ndarray, writer: StoreWriter,
         layout: Layout, device: torch.device, *, batch_size: int, num_workers: int, dtype: str,
         flatten: bool, quiet: bool, done_before: int, total: int, label: str,
         amp: str | None = None, channels_last: bool = False, decoder: str = "pil") -> int:
    if not len(todo):
        return 0
    # Batches are fixed slices of the full row range, so a resumed or sharded
    # run feeds the model exactly the batches an uninterrupted run would, and
    # its results are bit-identical; rows already written are computed again
    # (at most one batch per gap) but not written.
    pending = np.zeros(len(images), dtype=bool)
    pending[todo] = True
    batches = [list(range(k * batch_size, min((k + 1) * batch_size, len(images))))
               for k in np.unique(todo // batch_size)]
    loader = DataLoader(_ImageRows(images, model.transform, decoder), batch_sampler=batches,
                        num_workers=num_workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda",
                        persistent_workers=num_workers > 0, prefetch_factor=2 if num_workers else None)
    progress = tqdm(total=total, initial=done_before, unit="img", disable=quiet,
                    file=sys.stderr, desc=label, dynamic_ncols=True)
    background = _BackgroundWriter(writer, writer.block_rows or layout.write_rows, layout.n_rows, progress)
    host = _HostBuffers(device, batch_size, dtype, flatten)
    try:
        for batch, rows, bad in loader:
            if bad:
                names = ", ".join(f"{images.file_names[r]} ({err[:80]})" for r, err in bad)
                raise UserError(f"cannot read {len(bad)} image(s): {names}; fix or remove them "
                                "and run again (finished rows are kept)")
            if decoder == "torchvision":
                batch = _decode_batch(batch, [images.file_names[r] for r in rows], model.transform, device)
            batch = batch.to(device, non_blocking=True)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            out = host.take()
            with _autocast(device, amp):
                if host.stream is None:   # on the CPU, straight from the hook into host memory
                    extractor(batch, into=out.fill)
                else:
                    out.fill_from_device(extractor(batch), host.stream)
            background.put(rows, pending[rows], out)
    except KeyboardInterrupt:
        background.finish()
        progress.close()
        if not writer.supports_resume:
            raise Interrupted("interrupted: nothing was kept (the txt/npy layout cannot resume); "
                              "use a .zarr or .h5 out path for resumable runs")
        raise Interrupted(f"interrupted: {done_before + background.rows_written} of {total} "
                          "rows are kept; run the same command again to resume")
    except BaseException:
        background.finish()
        progress.close()
        raise
    background.finish()
    progress.close()
    return background.rows_written
