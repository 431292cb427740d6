"""Every store backend passes the one contract (tests/store/contract.py)."""
from __future__ import annotations

from contract import StoreBackendContract


class TestZarrSharded(StoreBackendContract):
    file_format, suffix, shard_rows = "zarr", ".zarr", 16

    def lose_second_block(self, path) -> bool:
        (path / "activations" / "classifier.4" / "c" / "1" / "0").unlink()
        return True


class TestZarrUnsharded(StoreBackendContract):
    file_format, suffix, shard_rows = "zarr", ".zarr", 0

    def lose_second_block(self, path) -> bool:
        (path / "activations" / "classifier.4" / "c" / "1" / "0").unlink()
        return True


class TestHdf5(StoreBackendContract):
    file_format, suffix = "hdf5", ".h5"
