"""Opening an HDF5 store for writing: waiting out readers, and clearing the
"open for write" flag a killed SWMR writer leaves, only while the writer lock
proves that writer dead (what ``h5clear -s`` does).
"""
from __future__ import annotations

import ctypes
import glob
import os
import time
from typing import Callable

import h5py

from ...errors import StoreBusyError
from ..io import lock

# The file format's version bounds: 1.10's format (the first with SWMR, which
# the crash safety rests on) up to 1.14's. HDF5 2.0's "latest" writes layout
# messages that HDF5 1.x cannot read.
LIBVER = ("v110", "v114")
# How long a writer waits for other processes to close the file (a reader
# polling progress holds it for moments).
LOCK_WAIT_SECONDS = 30.0


def while_locked(path, open_file: Callable[[], h5py.File]) -> h5py.File:
    """``open_file()``, retried while another process holds the file's lock.

    HDF5 refuses a writer while any other process has the file open, e.g. a
    reader that opened it between two runs; readers that look in for a
    moment are waited out, a long-lived one gets a message saying what to do.
    """
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            return open_file()
        except OSError as error:
            if "unable to lock file" not in str(error):
                raise
            if time.monotonic() > deadline:
                raise StoreBusyError(f"{path} is open in another process (HDF5 allows no writer then): "
                                "close it there and run again") from error
            time.sleep(0.2)


def open_rw(path) -> h5py.File:
    """Open for writing, clearing the superblock's "open for write" flag that a
    killed SWMR writer leaves behind (what ``h5clear -s`` does), but only while
    this process holds the store's writer lock: the lock proves that no writer
    is alive, so the flag is a dead one's."""
    try:
        file = while_locked(path, lambda: h5py.File(path, "r+", libver=LIBVER))
    except OSError as error:
        if "consistency flags" not in str(error) and "already open for write" not in str(error):
            raise
        if lock.held_here(path):
            file = _open_clearing_flags(path)
        else:
            with lock.acquire(path):
                file = _open_clearing_flags(path)
    file.swmr_mode = True
    return file


def _open_clearing_flags(path) -> h5py.File:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V114)
    _clear_status_flags_on(fapl)
    return h5py.File(while_locked(path, lambda: h5py.h5f.open(str(path).encode(), h5py.h5f.ACC_RDWR,
                                                               fapl=fapl)))


def open_for_write(path) -> bool:
    """Whether the superblock's "open for write" flags are set: a writer has the
    file open, or was killed with it open. Superblocks of version 2 and 3 (the
    1.10 format) keep the flags in byte 11."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    return len(head) == 12 and head[8] >= 2 and head[11] != 0


def _clear_status_flags_on(fapl) -> None:
    libs = glob.glob(os.path.join(os.path.dirname(h5py.__file__), os.pardir, "h5py.libs", "libhdf5-*.so*"))
    lib = ctypes.CDLL(libs[0]) if libs else ctypes.CDLL(None)
    lib.H5Pset.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p]
    flag = ctypes.c_bool(True)
    if lib.H5Pset(fapl.id, b"clear_status_flags", ctypes.byref(flag)) < 0:
        raise OSError("could not clear the HDF5 status flags of a killed writer")
