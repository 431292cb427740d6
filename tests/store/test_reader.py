"""The lazy reader: every selection returns exactly what the same selection
returns on an in-memory NumPy copy, in both formats, reading only what it needs."""
from __future__ import annotations

import numpy as np
import pytest
from synthetic import SUFFIXES, write_store

from actstore import UserError, open_store
from actstore.errors import RowsNotWrittenError
from actstore.store.read import arrays as reader_module


@pytest.fixture(scope="module", params=list(SUFFIXES))
def stored(request, tmp_path_factory):
    """(open store, in-memory values) for a complete 40-row store of each format."""
    path = tmp_path_factory.mktemp(request.param) / f"s{SUFFIXES[request.param]}"
    values = write_store(path, request.param)
    with open_store(path) as store:
        yield store, values


@pytest.fixture(scope="module", params=list(SUFFIXES))
def half_written(request, tmp_path_factory):
    """A store of each format whose rows 0..15 are written and 16..39 are not."""
    path = tmp_path_factory.mktemp(request.param) / f"half{SUFFIXES[request.param]}"
    write_store(path, request.param, written=slice(0, 16))
    with open_store(path) as store:
        yield store


IMAGE_KEYS = {
    "int": 7, "negative int": -1, "slice": slice(3, 29), "stepped slice": slice(1, 40, 7),
    "reversed slice": slice(30, 2, -3), "empty slice": slice(5, 5),
    "sorted list": [0, 8, 9, 39], "unsorted list": [33, 2, 17, 9], "repeated list": [5, 5, 31, 5, 0],
    "negative list": [-1, -40, 3], "array": np.array([12, 4, 20]), "empty list": [],
    "bool mask": np.arange(40) % 3 == 1,
}


@pytest.mark.parametrize("key", IMAGE_KEYS.values(), ids=IMAGE_KEYS.keys())
def test_image_axis_selection_matches_numpy(stored, key):
    store, values = stored
    got = store["features.0"][key]
    assert np.array_equal(got, values["features.0"][key])
    assert got.shape == values["features.0"][key].shape


# Other axes are indexed orthogonally (each list picks along its own axis), as in zarr's oindex.
OTHER_KEYS = {
    "channel int": ((slice(None), 5), lambda v: v[:, 5]),
    "row and channel lists": (([3, 1], [5, 0, 4]), lambda v: v[[3, 1]][:, [5, 0, 4]]),
    "lists, int and slice": (([9, 2, 2], 1, slice(1, 4), [3, 0]), lambda v: v[[9, 2, 2]][:, 1][:, 1:4][:, :, [3, 0]]),
    "ellipsis": ((Ellipsis, 2), lambda v: v[..., 2]),
}


@pytest.mark.parametrize("key, expected", OTHER_KEYS.values(), ids=OTHER_KEYS.keys())
def test_other_axes_selection_matches_numpy(stored, key, expected):
    store, values = stored
    assert np.array_equal(store["features.0"][key], expected(values["features.0"]))


def test_linear_layer_selection_matches_numpy(stored):
    store, values = stored
    assert np.array_equal(store["classifier.4"][[7, 1], [9, 0, 9]], values["classifier.4"][[7, 1]][:, [9, 0, 9]])


def test_out_of_range_index_raises_index_error(stored):
    store, _ = stored
    with pytest.raises(IndexError):
        store["features.0"][[0, 40]]


def test_unwritten_rows_raise_instead_of_returning_fill_values(half_written):
    with pytest.raises(RowsNotWrittenError, match="first: row 16"):
        half_written["features.0"][10:20]


def test_written_rows_of_a_partial_store_read(half_written):
    assert half_written["classifier.4"][half_written.written_rows].shape == (16, 10)


def test_class_names_follow_targets(stored):
    store, _ = stored
    assert list(store.class_names[[0, 13, 14, 27, 28, 39]]) == ["cat", "cat", "dog", "dog", "zebra", "zebra"]


def test_select_class_gives_its_rows_in_store_order(stored):
    store, _ = stored
    assert store.select(classes="dog").tolist() == list(range(14, 28))


def test_select_several_classes_gives_their_union(stored):
    store, _ = stored
    assert store.select(classes=["zebra", "cat"]).tolist() == list(range(0, 14)) + list(range(28, 40))


def test_select_exact_files_keeps_the_order_given(stored):
    store, _ = stored
    assert store.select(files=["zebra/zebra_39.png", "cat/cat_0.png", "dog/dog_20.png"]).tolist() == [39, 0, 20]


def test_select_glob_matches_whole_names(stored):
    store, _ = stored
    assert store.select(files="*_3?.png").tolist() == list(range(30, 40))
    assert store.select(files=["cat/*_1.png", "dog/dog_1[45].png"]).tolist() == [1, 14, 15]


def test_select_glob_matching_nothing_is_empty(stored):
    store, _ = stored
    assert store.select(files="*.tiff").tolist() == []


def test_select_classes_and_files_must_both_match(stored):
    store, _ = stored
    assert store.select(classes="dog", files="*_1?.png").tolist() == [14, 15, 16, 17, 18, 19]


def test_select_rows_index_layers(stored):
    store, values = stored
    rows = store.select(classes="zebra")
    assert np.array_equal(store["features.0"][rows], values["features.0"][28:40])


def test_select_unknown_class_names_the_classes(stored):
    store, _ = stored
    with pytest.raises(UserError, match="no class 'horse'.*cat, dog, zebra"):
        store.select(classes=["horse"])


def test_select_unknown_file_is_user_error(stored):
    store, _ = stored
    with pytest.raises(UserError, match="no file 'cat/nope.png'"):
        store.select(files=["cat/nope.png"])


FLAT_KEYS = {
    "all": ((slice(None), slice(None)), lambda f: f),
    "one unit": ((slice(None), 57), lambda f: f[:, 57]),
    "row int": (11, lambda f: f[11]),
    "rows and units unsorted, repeated": (([30, 2, 2, 17], [119, 0, 64, 64, 5]),
                                          lambda f: f[[30, 2, 2, 17]][:, [119, 0, 64, 64, 5]]),
    "unit slice": (([4, 5], slice(20, 61, 4)), lambda f: f[[4, 5], 20:61:4]),
    "unit mask": ((slice(8, 24), np.arange(120) % 7 == 0), lambda f: f[8:24, np.arange(120) % 7 == 0]),
    "row and unit int": ((3, -1), lambda f: f[3, -1]),
    "empty units": (([1, 2], []), lambda f: f[[1, 2]][:, []]),
}


@pytest.mark.parametrize("key, expected", FLAT_KEYS.values(), ids=FLAT_KEYS.keys())
def test_flat_selection_matches_numpy_reshape(stored, key, expected):
    store, values = stored
    got = store.flat("features.0")[key]
    want = expected(values["features.0"].reshape(40, -1))
    assert got.shape == want.shape and np.array_equal(got, want)


def test_flat_of_a_linear_layer_is_the_layer(stored):
    store, values = stored
    assert store.flat("classifier.4").shape == (40, 10)
    assert np.array_equal(store.flat("classifier.4")[[3, 1], [9, 2]], values["classifier.4"][np.ix_([3, 1], [9, 2])])


def test_flat_units_read_only_their_channels_in_bounded_blocks(stored, monkeypatch):
    store, values = stored
    reads = []
    original = store._reader.read
    monkeypatch.setattr(store._reader, "read", lambda key, sel: reads.append(sel) or original(key, sel))
    # Budget for 8 rows (one chunk row) of the units' box: 2 channels x 4 x 1 floats.
    monkeypatch.setattr(reader_module, "READ_BLOCK_BYTES", 8 * 2 * 4 * 1 * 4)
    units = [2 * 20 + 7, 5 * 20 + 19]          # channel 2 (h1, w3) and channel 5 (h4, w3)
    got = store.flat("features.0")[:, units]
    assert np.array_equal(got, values["features.0"].reshape(40, -1)[:, units])
    assert all(sel[1].tolist() == [2, 5] for sel in reads)                # only those channels
    assert all(sel[2] == slice(1, 5) and sel[3] == slice(3, 4) for sel in reads)   # their box
    assert [len(np.arange(40)[sel[0]]) for sel in reads] == [8] * 5       # one chunk row per block


def test_iter_batches_cover_the_layer_in_order(stored):
    store, values = stored
    batches = list(store.iter_batches("features.0", 16))
    assert [rows.tolist() for rows, _ in batches] == [list(range(16)), list(range(16, 32)), list(range(32, 40))]
    assert np.array_equal(np.concatenate([data for _, data in batches]), values["features.0"])


def test_iter_batches_follow_the_rows_given(stored):
    store, values = stored
    rows = [39, 3, 3, 20, 0]
    batches = list(store.iter_batches("classifier.4", 2, rows=rows, flat=True))
    assert [r.tolist() for r, _ in batches] == [[39, 3], [3, 20], [0]]
    assert np.array_equal(np.concatenate([d for _, d in batches]), values["classifier.4"][rows])


def test_iter_batches_flat_yields_units(stored):
    store, values = stored
    _, data = next(store.iter_batches("features.0", 8, rows=store.select(classes="dog"), flat=True))
    assert np.array_equal(data, values["features.0"][14:22].reshape(8, -1))


def test_iter_batches_refuse_unwritten_rows_before_reading(half_written):
    with pytest.raises(RowsNotWrittenError):
        half_written.iter_batches("classifier.4", 8).__next__()


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_layers_are_listed_in_module_name_order_on_every_open(tmp_path, image_dir, weights_file, suffix):
    from actstore import extract
    order = ["features.5", "classifier.6", "features.0"]
    out = tmp_path / f"s{suffix}"
    extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=order, in_path=image_dir,
            out_path=out, batch_size=6, num_workers=0, quiet=True)
    for _ in range(3):
        with open_store(out) as store:
            assert store.layers == order and store.attrs["layers"] == order
            assert list(store.summary()["layers"]) == order


def test_a_store_without_recorded_layers_lists_them_sorted(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, "hdf5")
    from actstore.store import reopen_writer
    writer = reopen_writer(path)
    assert writer.root_attrs()["layers"] == ["features.0", "classifier.4"]
    writer.update_attrs({"layers": None})
    writer.close()
    with open_store(path) as store:
        assert store.layers == ["classifier.4", "features.0"]
