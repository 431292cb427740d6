"""Where a run writes is resolved once: a resumed store is opened once (plus
what completing it takes), and a dry run refuses what the real run would."""
from __future__ import annotations

import numpy as np
import pytest

from actstore import extract, open_store
from actstore.errors import Interrupted, StoreConflictError
from actstore.store import BACKENDS, StoreWriter


def _count_opens(monkeypatch) -> list[str]:
    """Every construction of a backend writer or reader, by class name."""
    opened: list[str] = []
    for writer, reader in BACKENDS.values():
        for cls in (writer, reader):
            original = cls.__init__

            def counting(self, *args, _original=original, _name=cls.__name__, **kwargs):
                opened.append(_name)
                _original(self, *args, **kwargs)
            monkeypatch.setattr(cls, "__init__", counting)
    return opened


def _stop_after_first_batch(monkeypatch) -> None:
    """Ctrl-C in the main thread as it hands the second batch to the writer."""
    from actstore.extract.writer_thread import BackgroundWriter
    original, calls = BackgroundWriter.put, [0]

    def put(self, *args):
        calls[0] += 1
        if calls[0] > 1:
            raise KeyboardInterrupt
        original(self, *args)
    monkeypatch.setattr(BackgroundWriter, "put", put)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_resumed_run_opens_its_store_once(tmp_path, image_dir, weights_file, suffix, monkeypatch):
    run = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.4"],
               in_path=image_dir, out_path=tmp_path / f"run{suffix}", batch_size=4, chunk_images=4,
               num_workers=0, quiet=True, **({"zarr_shard_rows": 4} if suffix == ".zarr" else {}))
    with monkeypatch.context() as patch:
        _stop_after_first_batch(patch)
        with pytest.raises(Interrupted, match="4 of 12 rows are kept"):
            extract(**run)
    opened = _count_opens(monkeypatch)
    result = extract(**run)
    assert result.resumed and result.rows_this_run == 8 and result.complete
    assert len(opened) == 1 and opened[0].endswith("Writer")   # the resume decision and the writes share it
    monkeypatch.undo()
    with open_store(run["out_path"]) as store:
        assert store.status == "complete" and store.written.all()


def test_a_new_store_is_created_without_opening_anything_first(tmp_path, image_dir, weights_file, monkeypatch):
    opened = _count_opens(monkeypatch)
    extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.4"],
            in_path=image_dir, out_path=tmp_path / "new.zarr", num_workers=0, quiet=True)
    # built under a temporary name, then opened where it belongs: the run's one open
    assert opened == ["ZarrWriter"]


def test_a_dry_run_refuses_another_runs_store_as_the_real_run_does(tmp_path, image_dir, weights_file):
    run = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.4"],
               in_path=image_dir, out_path=tmp_path / "run.zarr", num_workers=0, quiet=True)
    extract(**run)
    for dry_run in (True, False):
        with pytest.raises(StoreConflictError, match="--batch-size 5 differs from the store's 12"):
            extract(**run, batch_size=5, dry_run=dry_run)
    with open_store(run["out_path"]) as store:
        assert store.complete and np.isfinite(store["classifier.4"][:]).all()


def test_store_writers_are_row_sinks_that_resume():
    assert all(writer.resumable and writer.noun == "store" for writer, _ in BACKENDS.values())
    assert issubclass(BACKENDS["zarr"][0], StoreWriter)
