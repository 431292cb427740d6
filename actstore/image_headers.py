"""The size of a plainly sound JPEG or PNG, read from its structure without Pillow.

Checking a folder of images before a run (``ImageSet.check``) opened each
with Pillow, whose header parsers run in Python and hold the GIL: about
0.15 ms a file, 0.6 s for 4,096 (benchmarks/bench_setup.py). Walking the
file's own structure costs a quarter of that or less. Only a file that is
plainly sound passes here; anything else (another format, an unusual or
damaged structure) gets None, and Pillow then decides, as before.

- JPEG: the markers from SOI to the start of scan (SOS), each segment's
  length within the file; a frame header (SOF) with a non-zero size; an
  end marker (EOI) in the last KiB, as a complete file has.
- PNG: every chunk up to IEND present in full with a matching CRC (what
  Pillow's ``verify`` checks); IHDR first, with a non-zero size.
"""
from __future__ import annotations

import os
import zlib
from typing import BinaryIO

JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
JPEG_SCAN = 0xDA
# Frame headers (SOF0-15 without DHT, JPG and DAC, which share the range).
JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
PNG_START = b"\x89PNG\r\n\x1a\n"
TAIL_BYTES = 1024   # where a complete JPEG's end marker is looked for (trailing bytes are common)


def sound_size(handle: BinaryIO) -> tuple[int, int] | None:
    """``(width, height)`` of the JPEG or PNG open as ``handle`` (binary,
    seekable, at its start) when its structure is plainly sound, else None."""
    start = handle.read(8)
    if start.startswith(JPEG_START):
        return _jpeg_size(handle, os.fstat(handle.fileno()).st_size)
    if start == PNG_START:
        return _png_size(handle)
    return None


def _jpeg_size(handle: BinaryIO, file_size: int) -> tuple[int, int] | None:
    handle.seek(2)
    size = None
    while True:
        marker = handle.read(4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return None
        kind, length = marker[1], int.from_bytes(marker[2:], "big")
        if kind == JPEG_SCAN:
            break
        if length < 2 or handle.tell() + length - 2 > file_size:
            return None
        if kind in JPEG_FRAMES:
            frame = handle.read(5)
            if len(frame) < 5 or length < 7:
                return None
            size = (int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big"))
            length -= 5
        handle.seek(length - 2, os.SEEK_CUR)
    handle.seek(max(0, file_size - TAIL_BYTES))
    if size is None or 0 in size or JPEG_END not in handle.read():
        return None
    return size


def _png_size(handle: BinaryIO) -> tuple[int, int] | None:
    size = None
    while True:
        head = handle.read(8)
        if len(head) < 8:
            return None
        length, kind = int.from_bytes(head[:4], "big"), head[4:]
        body = handle.read(length + 4)
        if len(body) < length + 4 or zlib.crc32(body[:length], zlib.crc32(kind)) != \
                int.from_bytes(body[length:], "big"):
            return None
        if size is None:
            if kind != b"IHDR" or length < 8:
                return None
            size = (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big"))
        if kind == b"IEND":
            return size if 0 not in size else None
