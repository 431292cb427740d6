#!/usr/bin/env bash
# Read HDF5 stores with h5py 3.11, built on HDF5 1.14 (the HDF5 that MATLAB, R,
# Julia and most HPC modules link), in a virtual environment of its own, with
# no actstore and no hdf5plugin: what a user without actstore sees.
#
#   benchmarks/check_old_readers.sh STORE.h5 [STORE.h5 ...]
#
# The environment is made on first use (pip install h5py==3.11 numpy) at
# $ACTSTORE_OLD_H5PY (default /tmp/h5py311). Prints the HDF5 version, then one
# line per array: store, array, dtype, shape, the names of its dimensions and
# the SHA-256 of its values (C-order bytes; strings as UTF-8 lines), which
# tests/test_interop.py compares with what actstore reads.
set -euo pipefail
venv="${ACTSTORE_OLD_H5PY:-/tmp/h5py311}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import h5py" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "h5py==3.11" numpy
fi
exec "$venv/bin/python" - "$@" <<'PY'
import hashlib
import sys

import h5py
import numpy as np

print("hdf5", h5py.version.hdf5_version)


def digest(dset):
    if h5py.check_string_dtype(dset.dtype):
        return hashlib.sha256("\n".join(dset.asstr()[:]).encode()).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(dset[()]).tobytes()).hexdigest()


for path in sys.argv[1:]:
    with h5py.File(path, "r") as f:
        names = ["file_names", "targets", "classes", "written"]
        names += [f"activations/{n}" for n, d in f["activations"].items() if "CLASS" not in d.attrs]
        for name in names:
            dset = f[name]
            dims = ",".join(d[0].name.rsplit("/", 1)[-1] if len(d) else "-" for d in dset.dims)
            print(path, name, dset.dtype, "x".join(map(str, dset.shape)), dims, digest(dset))
PY
