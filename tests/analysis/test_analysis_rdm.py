"""RDMs, class means and RSA from stores, against the formulas computed in RAM,
and every input they refuse."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from synthetic import CLASSES, SUFFIXES, write_store

from actstore import open_store
from actstore.analysis import class_means, compare_rdms, rdm
from actstore.errors import (
    IncompleteStoreError,
    LayerNotFoundError,
    MemoryBudgetError,
    NanRowsError,
    TooFewRowsError,
    UserError,
)
from actstore.store import reopen_writer

xr = pytest.importorskip("xarray")
METRICS = ("correlation", "cosine", "euclidean")


def reference(x: np.ndarray, metric: str) -> np.ndarray:
    """The RDM of rows ``x`` in float64, straight from its definition."""
    x = x.reshape(len(x), -1).astype(np.float64)
    if metric == "correlation":
        d = 1 - np.corrcoef(x)
    elif metric == "cosine":
        norms = np.linalg.norm(x, axis=1)
        d = 1 - x @ x.T / np.outer(norms, norms)
    else:
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, 0)
    return d


def overwrite_rows(path, start: int, layer: str, rows: np.ndarray) -> None:
    with reopen_writer(path) as writer:
        writer.write_rows(start, {layer: rows})


@pytest.fixture(scope="module", params=list(SUFFIXES))
def stored(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / f"s{SUFFIXES[request.param]}"
    return path, write_store(path, request.param)


@pytest.mark.parametrize("metric", METRICS)
def test_rdm_equals_the_formula(stored, metric):
    path, values = stored
    result = rdm(path, "features.0", metric=metric)
    np.testing.assert_allclose(result.values, reference(values["features.0"], metric), atol=1e-6, rtol=0)
    assert np.all(np.diag(result.values) == 0)
    assert result.dims == ("image", "image_") and result.attrs["passes"] == 1
    assert result.attrs["metric"] == metric and result.attrs["layer"] == "features.0"
    with open_store(path) as store:
        assert list(result.image.values) == list(store.file_names)
        assert list(result.class_name.values) == list(store.class_names)


def test_rdm_by_class_is_the_rdm_of_the_class_means(stored):
    path, values = stored
    with open_store(path) as store:
        means = np.stack([values["features.0"][store.targets == t].mean(0) for t in range(len(CLASSES))])
        result = rdm(store, "features.0", by="class", metric="euclidean")
        averaged = class_means(store, "features.0")
    np.testing.assert_allclose(result.values, reference(means, "euclidean"), atol=1e-6, rtol=0)
    assert result.dims == ("class", "class_") and list(result["class"].values) == list(CLASSES)
    with open_store(path) as store:   # float32 products of the class means
        correlation = rdm(store, "features.0", by="class")
    assert correlation.attrs["products"] == "float32"
    np.testing.assert_allclose(correlation.values, reference(means, "correlation"), atol=1e-6, rtol=0)
    np.testing.assert_allclose(averaged.values, means, atol=1e-6)
    assert averaged.dims == ("class", "channel", "height", "width")


def test_rows_are_used_in_the_order_given(stored):
    path, values = stored
    rows = np.array([7, 3, 21, 0, 39, 12])
    result = rdm(path, "classifier.4", rows=rows)
    np.testing.assert_allclose(result.values, reference(values["classifier.4"][rows], "correlation"), atol=1e-6)


def test_a_result_larger_than_the_budget_is_written_in_tiles_and_read_lazily(tmp_path):
    values = write_store(tmp_path / "big.zarr", "zarr", n=420, conv=(4, 3, 3), chunk_images=16)
    with pytest.raises(MemoryBudgetError, match="out=PATH"):
        rdm(tmp_path / "big.zarr", "features.0", max_memory="1MB")
    result = rdm(tmp_path / "big.zarr", "features.0", max_memory="1MB", out=tmp_path / "rdm.zarr")
    assert result.attrs["passes"] > 1 and hasattr(result.data, "dask")
    np.testing.assert_allclose(result.values, reference(values["features.0"], "correlation"), atol=1e-6)
    assert (tmp_path / "rdm.zarr").exists()


def test_sharded_and_imported_stores(tmp_path):
    from actstore.legacy import import_legacy
    values = write_store(tmp_path / "sharded.zarr", "zarr", n=48, chunk_images=8, shard_rows=16)
    np.testing.assert_allclose(rdm(tmp_path / "sharded.zarr", "features.0").values,
                               reference(values["features.0"], "correlation"), atol=1e-6)
    folder = tmp_path / "legacy" / "alexnet" / "classifier.4"
    folder.mkdir(parents=True)
    np.save(folder / "activations.npy", values["classifier.4"])
    np.save(folder / "targets.npy", np.arange(48) % 4)
    import_legacy(folder, tmp_path / "imported.zarr", chunk_images=8)
    np.testing.assert_allclose(rdm(tmp_path / "imported.zarr", "classifier.4", metric="cosine").values,
                               reference(values["classifier.4"], "cosine"), atol=1e-6)


def test_an_incomplete_store_is_refused_naming_the_rows_unless_rows_exclude_them(tmp_path):
    values = write_store(tmp_path / "part.zarr", "zarr", n=40, written=slice(0, 24))
    with pytest.raises(IncompleteStoreError, match=r"16 row\(s\).*rows 24-39"):
        rdm(tmp_path / "part.zarr", "features.0")
    result = rdm(tmp_path / "part.zarr", "features.0", rows=np.arange(24))
    np.testing.assert_allclose(result.values, reference(values["features.0"][:24], "correlation"), atol=1e-6)


def test_nan_rows_are_refused_naming_them(tmp_path):
    values = write_store(tmp_path / "nan.h5", "hdf5", n=40)
    block = values["classifier.4"][8:16].copy()
    block[3] = np.nan
    overwrite_rows(tmp_path / "nan.h5", 8, "classifier.4", block)
    with pytest.raises(NanRowsError, match=r"rows 11.*cat_11\.png"):
        rdm(tmp_path / "nan.h5", "classifier.4")
    keep = np.setdiff1d(np.arange(40), [11])
    assert rdm(tmp_path / "nan.h5", "classifier.4", rows=keep).shape == (39, 39)


def test_a_missing_layer_names_close_ones(stored):
    path, _ = stored
    with pytest.raises(LayerNotFoundError, match=r"no layer 'features\.1'.*did you mean features\.0") as caught:
        rdm(path, "features.1")
    assert isinstance(caught.value, KeyError) and "\n" not in str(caught.value)


def test_a_constant_row_gives_nan_pairs_and_a_warning_naming_the_file(tmp_path):
    values = write_store(tmp_path / "c.zarr", "zarr", n=24)
    block = values["classifier.4"][8:16].copy()
    block[2] = 0.5
    overwrite_rows(tmp_path / "c.zarr", 8, "classifier.4", block)
    with pytest.warns(RuntimeWarning, match=r"1 row\(s\) are constant.*dog/dog_10\.png"):
        result = rdm(tmp_path / "c.zarr", "classifier.4").values
    assert np.isnan(result[10, np.arange(24) != 10]).all() and result[10, 10] == 0
    others = np.arange(24) != 10
    values["classifier.4"][10] = 0.5
    np.testing.assert_allclose(result[np.ix_(others, others)],
                               reference(values["classifier.4"][others], "correlation"), atol=1e-6)


def test_fewer_than_two_rows_and_bad_options_are_refused(stored):
    path, _ = stored
    with pytest.raises(TooFewRowsError, match="at least 2"):
        rdm(path, "features.0", rows=[3])
    with pytest.raises(TooFewRowsError, match="at least 2 classes"):
        rdm(path, "features.0", by="class", rows=[0, 1, 2])
    with pytest.raises(UserError, match="metric 'manhattan'"):
        rdm(path, "features.0", metric="manhattan")
    with pytest.raises(UserError, match="max_memory 'lots'"):
        rdm(path, "features.0", max_memory="lots")
    with pytest.raises(UserError, match="precision 'half': use one of auto, float64, float32"):
        rdm(path, "features.0", precision="half")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("metric", ["euclidean", "correlation"])   # float64 and float32 products
def test_the_torch_code_path_gives_the_same_rdm(stored, metric):
    path, values = stored
    result = rdm(path, "features.0", metric=metric, device="torch:cpu")
    np.testing.assert_allclose(result.values, reference(values["features.0"], metric), atol=1e-6)


def shared_pattern(n: int, units: int, seed: int = 0) -> np.ndarray:
    """A ReLU layer of a rank-32 signal plus noise, each row scaled and lifted
    by its own constant: the rows share large units, and float32 sums of
    their products are off by 1e-6 (correlation) to 4e-6 (cosine)."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, 32)) @ rng.standard_normal((32, units)) + rng.standard_normal((n, units))
    return (np.maximum(signal, 0) * rng.uniform(0.5, 3, (n, 1)) + rng.uniform(0, 10, (n, 1))).astype(np.float32)


@pytest.mark.parametrize("metric", METRICS)
def test_float32_products_keep_digits_where_rows_share_a_pattern(tmp_path, metric):
    path = tmp_path / "s.zarr"
    write_store(path, "zarr", n=60, conv=(8, 32, 32), chunk_channels=4)
    values = shared_pattern(60, 8 * 32 * 32).reshape(60, 8, 32, 32)
    overwrite_rows(path, 0, "features.0", values)
    expected = reference(values, metric)
    fast = rdm(path, "features.0", metric=metric)
    assert fast.attrs["products"] == ("float64" if metric == "euclidean" else "float32")
    np.testing.assert_allclose(fast.values, expected, atol=1e-6 if metric != "euclidean" else 1e-9, rtol=0)
    exact = rdm(path, "features.0", metric=metric, precision="float64")
    assert exact.attrs["products"] == "float64"
    np.testing.assert_allclose(exact.values, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_values_beyond_float32s_range_are_multiplied_in_float64(tmp_path, scale):
    path = tmp_path / "s.zarr"
    values = write_store(path, "zarr")
    big = (values["features.0"].astype(np.float64) * scale).astype(np.float32)
    overwrite_rows(path, 0, "features.0", big)
    for metric in ("correlation", "cosine"):
        result = rdm(path, "features.0", metric=metric)
        assert result.attrs["products"] == "float64" and result.attrs["passes"] == 2   # the float32 one stopped
        np.testing.assert_allclose(result.values, reference(big, metric), atol=1e-6, rtol=0)


def test_float32_products_in_tiles_take_out_what_the_first_pass_fixed(tmp_path):
    path = tmp_path / "s.zarr"
    write_store(path, "zarr", n=400, conv=(4, 32, 32), chunk_images=50)
    values = shared_pattern(400, 4 * 32 * 32, seed=1).reshape(400, 4, 32, 32)
    overwrite_rows(path, 0, "features.0", values)
    for metric in ("correlation", "cosine"):
        tiled = rdm(path, "features.0", metric=metric, max_memory="1MB", out=tmp_path / f"{metric}.zarr")
        assert tiled.attrs["passes"] > 1 and tiled.attrs["products"] == "float32"
        np.testing.assert_allclose(tiled.values, reference(values, metric), atol=1e-6, rtol=0)


@pytest.mark.cuda
def test_the_gram_blocks_on_a_gpu_give_the_same_rdm_and_cka(stored):
    from actstore.analysis import cka
    path, values = stored
    try:
        result = rdm(path, "features.0", device="cuda")
    except (RuntimeError, AssertionError, UserError) as error:   # torch without CUDA, or no torch
        pytest.skip(f"no CUDA device here ({error})")
    np.testing.assert_allclose(result.values, reference(values["features.0"], "correlation"), atol=1e-6)
    on_gpu = cka(path, "features.0", layer_b="classifier.4", device="cuda")
    assert float(on_gpu) == pytest.approx(float(cka(path, "features.0", layer_b="classifier.4")), abs=1e-9)


# --------------------------------------------------------------------------- RSA


def kendall_tau_a_pairs(x: np.ndarray, y: np.ndarray) -> float:
    """Tau-a by counting every pair: (concordant − discordant) / (m(m−1)/2)."""
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    m = len(x)
    return float(np.sum(np.triu(sx * sy, 1)) / (m * (m - 1) / 2))


def test_compare_rdms_against_the_definitions():
    from scipy.stats import pearsonr, spearmanr
    rng = np.random.default_rng(0)
    a = reference(rng.standard_normal((12, 5)), "euclidean")
    b = np.round(a + rng.standard_normal(a.shape) * 0.5, 0)   # ties, as in binned brain RDMs
    b = (b + b.T) / 2
    np.fill_diagonal(b, 0)
    i, j = np.triu_indices(12, 1)
    assert compare_rdms(a, b, "pearson") == pytest.approx(pearsonr(a[i, j], b[i, j])[0], abs=1e-12)
    assert compare_rdms(xr.DataArray(a), b) == pytest.approx(spearmanr(a[i, j], b[i, j])[0], abs=1e-12)
    tau = compare_rdms(a, b, "kendall_tau_a")
    assert tau == pytest.approx(kendall_tau_a_pairs(a[i, j], b[i, j]), abs=1e-12)
    rsatoolbox = pytest.importorskip("rsatoolbox")
    theirs = rsatoolbox.rdm.compare(rsatoolbox.rdm.RDMs(a[i, j][None]), rsatoolbox.rdm.RDMs(b[i, j][None]),
                                    method="tau-a")
    assert tau == pytest.approx(float(theirs[0, 0]), abs=1e-12)


def test_compare_rdms_with_permutations_gives_p_value_and_interval():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 4))
    a, b = reference(x, "correlation"), reference(x + 0.3 * rng.standard_normal(x.shape), "correlation")
    result = compare_rdms(a, b, permutations=200, seed=3)
    assert result.r == compare_rdms(a, b)
    assert 0 < result.p_value < 0.05 and result.ci[0] < result.r < result.ci[1]
    unrelated = compare_rdms(a, reference(rng.standard_normal((10, 4)), "correlation"), permutations=200)
    assert unrelated.p_value > 0.01
    with pytest.raises(UserError, match="differ in shape"):
        compare_rdms(a, b[:9, :9])


# --------------------------------------------------------------------------- every kind of store


@pytest.mark.slow
def test_a_store_written_by_shards_of_a_run(tmp_path, image_dir, weights_file):
    from actstore import extract
    common = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.4"],
                  in_path=image_dir, out_path=tmp_path / "sharded.zarr", batch_size=4, chunk_images=4,
                  num_workers=0, quiet=True)
    extract(shard="0/2", **common)
    extract(shard="1/2", **common)
    with open_store(tmp_path / "sharded.zarr") as store:
        assert store.complete
        values = store["classifier.4"][:]
        result = rdm(store, "classifier.4", metric="cosine")
    np.testing.assert_allclose(result.values, reference(values, "cosine"), atol=1e-6)


def test_a_store_on_s3(tmp_path, s3_env):   # a fixture argument: set up before the environment is saved
    from conftest import BUCKET
    url = f"s3://{BUCKET}/analysis/store.zarr"
    values = write_store(url, "zarr", n=24)
    result = rdm(url, "features.0", metric="euclidean")
    np.testing.assert_allclose(result.values, reference(values["features.0"], "euclidean"), atol=1e-6)


def test_analysis_never_imports_torch_on_the_cpu(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    path = tmp_path / "s.h5"
    write_store(path, "hdf5")
    code = (f"import sys; from actstore.analysis import rdm, cka, pca; rdm({str(path)!r}, 'features.0'); "
            f"cka({str(path)!r}, 'features.0', layer_b='classifier.4'); pca({str(path)!r}, 'classifier.4', 2); "
            "print('torch' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.strip() == "False"
