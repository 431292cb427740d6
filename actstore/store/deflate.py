"""Deflate for the gzip codec: the fastest installed implementation whose
output any zlib inflates.

HDF5's gzip filter stores a zlib stream, Zarr's gzip codec a gzip member;
both are plain deflate, so any deflate encoder may write them and every
reader (h5dump, netCDF-C, h5py, numcodecs, zarr) decodes them unchanged.
ISA-L (the ``isal`` wheel) compresses activations 6-10x faster than
Python's zlib at level 1 (benchmarks/bench_codecs.py); without the wheel,
Python's own zlib writes the same streams, only slower.

Levels keep zlib's meaning (0-9): 0 stores, 1-3 are ISA-L's levels 1-3
(ISA-L has no higher ones), 4-9 go to zlib, for users who ask for more
ratio at any cost.
"""
from __future__ import annotations

import zlib
from typing import Any

try:
    from isal import isal_zlib as _isal
except ImportError:   # the wheel is missing: Python's zlib writes the same format
    _isal = None

IMPLEMENTATION = "isal" if _isal is not None else "zlib"
ISAL_LEVELS = (1, 2, 3)
ZLIB_STREAM, GZIP_MEMBER = 15, 31   # zlib's wbits for the two containers


def _compress(data: Any, level: int, wbits: int) -> bytes:
    if _isal is not None and level in ISAL_LEVELS:
        return _isal.compress(data, level, wbits)
    encoder = zlib.compressobj(level, zlib.DEFLATED, wbits)   # zlib.compress takes no wbits before 3.11
    return encoder.compress(data) + encoder.flush()


def zlib_stream(data: Any, level: int) -> bytes:
    """``data`` (any buffer) as a zlib stream: what HDF5's deflate filter stores."""
    return _compress(data, level, ZLIB_STREAM)


def gzip_member(data: Any, level: int) -> bytes:
    """``data`` (any buffer) as one gzip member (no file name, MTIME 0): what
    Zarr's gzip codec stores, and what numcodecs' GZip decodes."""
    return _compress(data, level, GZIP_MEMBER)
