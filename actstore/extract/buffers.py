"""Host memory for activations on their way to the writer, reused from batch to batch.

Also the forward pass's mixed precision (``--amp``), which decides what these
buffers receive.
"""
from __future__ import annotations

import collections
import contextlib
import math

import numpy as np
import torch


def autocast(device: torch.device, amp: str | None):
    """Mixed precision for the forward pass (``--amp``), or nothing."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, amp))


NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


class HostBatch:
    """One batch's activations in host memory that is reused from batch to
    batch (see :class:`HostBuffers`), in the stored dtype and shape."""

    def __init__(self, pool: "HostBuffers") -> None:
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
        """Copy a CPU output in (the Extractor's ``into``), casting to the stored
        dtype. NumPy copies on this thread; torch's ``copy_`` would wake its
        OpenMP threads, which then spin on the cores the writer's codec needs."""
        target = self.target(name, output)
        if output.dtype in NUMPY_FLOATS:
            with np.errstate(over="ignore", invalid="ignore"):   # to inf as torch casts, silently
                np.copyto(target.numpy(), output.detach().numpy(), casting="unsafe")
        else:   # bfloat16 (--amp), which NumPy lacks
            target.copy_(output)
        return target

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


class HostBuffers:
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
        self.free: collections.deque[HostBatch] = collections.deque()   # thread-safe appends/pops

    def take(self) -> HostBatch:
        try:
            return self.free.pop()
        except IndexError:
            return HostBatch(self)
