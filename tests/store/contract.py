"""The contract every store backend fills in, as one test class (zarr-python's
``StoreTests`` is the model): a backend's test module subclasses
:class:`StoreBackendContract` and says which format and layout it tests.

The tests use synthetic rows only, so they run without torch.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from actstore import open_store
from actstore.errors import RowsNotWrittenError
from actstore.store import (
    FORMAT_NAME,
    LayerSpec,
    Layout,
    create_writer,
    detect_format,
    is_store,
    open_reader,
    reopen_writer,
    writer_class,
)
from actstore.store.metadata.provenance import skipped_rows

N = 40
CONV, UNITS = (6, 5, 4), 10


class StoreBackendContract:
    """Subclasses set ``file_format``, ``suffix`` and ``shard_rows``."""

    file_format: str
    suffix: str
    shard_rows: int = 0

    # ------------------------------------------------------------------ helpers

    def layout(self) -> Layout:
        specs = (LayerSpec("features.0", CONV, CONV, "float32", (8, 3, *CONV[1:])),
                 LayerSpec("classifier.4", (UNITS,), (UNITS,), "float32", (8, UNITS)))
        return Layout(n_rows=N, layers=specs, chunk_images=8, shard_rows=self.shard_rows)

    def values(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(3)
        return {"features.0": rng.standard_normal((N, *CONV)).astype("float32"),
                "classifier.4": rng.standard_normal((N, UNITS)).astype("float32")}

    def create(self, path, attrs=None):
        names = [f"c{t}/img{i}.png" for i, t in enumerate(np.arange(N) % 3)]
        return create_writer(path, self.file_format, self.layout(), names, np.arange(N) % 3, ["c0", "c1", "c2"],
                             {"format": FORMAT_NAME, "model_name": "synthetic", "status": "incomplete",
                              **(attrs or {})})

    @pytest.fixture
    def path(self, tmp_path):
        return tmp_path / f"store{self.suffix}"

    # ------------------------------------------------------------------ the contract

    def test_rows_read_back_exactly_and_only_written_rows_are_marked(self, path):
        values, block = self.values(), self.layout().block_rows
        with self.create(path) as writer:
            writer.write_rows(0, {k: v[:block] for k, v in values.items()})
            assert writer.written().tolist() == [True] * block + [False] * (N - block)
        with open_store(path) as store:
            np.testing.assert_array_equal(store["features.0"][:block], values["features.0"][:block])
            np.testing.assert_array_equal(store["classifier.4"][[3, 0, 3]], values["classifier.4"][[3, 0, 3]])
            with pytest.raises(RowsNotWrittenError, match="not written yet"):
                store["classifier.4"][block]

    def test_a_reopened_store_takes_the_missing_rows(self, path):
        values, block = self.values(), self.layout().block_rows
        with self.create(path) as writer:
            writer.write_rows(0, {k: v[:block] for k, v in values.items()})
        with reopen_writer(path) as writer:
            assert writer.written().sum() == block
            writer.write_rows(block, {k: v[block:] for k, v in values.items()})
        with open_store(path) as store:
            assert store.written.all()
            for name, expected in values.items():
                np.testing.assert_array_equal(store[name][:], expected)

    def test_unwritten_float_rows_read_nan_to_other_readers(self, path):
        with self.create(path) as writer:
            writer.write_rows(0, {k: v[:8] for k, v in self.values().items()})
        reader = open_reader(path)
        try:
            raw = reader.read("activations/classifier.4", (slice(N - 1, N), slice(None)))
        finally:
            reader.close()
        assert np.isnan(raw).all()

    def test_attributes_round_trip_none_bools_dicts_and_lists(self, path):
        attrs = {"amp": None, "flatten_acts": True, "fingerprint": {"a": [1, 2]}, "layers": ["x", "y"],
                 "skipped_images": []}
        with self.create(path, attrs) as writer:
            writer.update_attrs({"status": "complete", "things": False})
            stored = writer.root_attrs()
        assert (stored["amp"], stored["flatten_acts"], stored["things"]) == (None, True, False)
        assert (stored["fingerprint"], stored["status"], stored["skipped_images"]) == ({"a": [1, 2]}, "complete", [])

    def test_skipped_images_are_recorded_by_row(self, path):
        with self.create(path) as writer:
            writer.add_skipped([{"file_name": "c1/img4.png", "reason": "broken", "row": 4}])
            mask = skipped_rows(writer.root_attrs(), N)
        assert np.flatnonzero(mask).tolist() == [4]

    def test_claims_are_kept_apart_and_withdrawn(self, path):
        with self.create(path) as writer:
            writer.add_claim("0-of-2", {"rows": [0, 16]})
            writer.add_claim("1-of-2", {"rows": [16, 40]})
            writer.remove_claim("0-of-2")
            assert writer.claims() == {"1-of-2": {"rows": [16, 40]}}

    def test_the_format_is_found_by_content_and_only_for_actstore_stores(self, path, tmp_path):
        self.create(path).close()
        assert detect_format(path) == self.file_format and is_store(path)
        assert writer_class(self.file_format).matches(path)
        stranger = tmp_path / f"other{self.suffix}"
        stranger.mkdir() if self.suffix == ".zarr" else stranger.write_bytes(b"\x89HDF\r\n\x1a\nnot really")
        assert not is_store(stranger)

    def test_a_lost_block_is_found_by_its_rows(self, path):
        with self.create(path) as writer:
            writer.write_rows(0, self.values())
        block = self.layout().block_rows
        lost = self.lose_second_block(path)
        if not lost:
            pytest.skip(f"{self.file_format} keeps every block in one file")
        with open_store(path) as store:
            assert store.missing_rows("classifier.4") == [(block, 2 * block - 1)]

    def lose_second_block(self, path) -> bool:
        """Delete the stored block (shard or chunk) of rows ``block..2*block`` of
        ``classifier.4``; False where a backend cannot lose one alone."""
        return False

    def test_the_file_count_of_a_layout_matches_what_is_written(self, path):
        with self.create(path) as writer:
            writer.add_claim("0-of-1", {"rows": [0, N]})   # a run's claim is one of its files
            writer.write_rows(0, self.values())
        expected = writer_class(self.file_format).file_count(self.layout())
        counted = sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 1
        assert counted == expected

    def test_the_write_blocks_are_the_layouts(self, path):
        with self.create(path) as writer:
            assert (writer.block_rows or self.layout().block_rows) == self.layout().block_rows
        reader = open_reader(path)
        try:
            assert reader.block_rows("activations/classifier.4") == self.layout().block_rows
            assert reader.layer_names() == ["features.0", "classifier.4"]   # the order they were given
        finally:
            reader.close()

    def test_chunks_split_conv_channels_and_keep_whole_rows(self, path):
        with self.create(path) as writer:
            writer.write_rows(0, self.values())
        with open_store(path) as store:
            assert store["features.0"].chunks == (8, 3, *CONV[1:])
            stored, count = store._reader.chunk_stats("activations/features.0")
            assert stored > 0 and count >= 1
            assert store.summary()["layers"]["features.0"]["files"] == (
                1 if not path.is_dir() else math.ceil(N / self.layout().block_rows) * (
                    1 if self.shard_rows else math.ceil(CONV[0] / 3)))
