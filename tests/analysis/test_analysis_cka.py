"""Linear CKA from stores against the formulas computed in RAM: both exact
forms, the debiased estimator, minibatches, two stores, and the refusals."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from synthetic import SUFFIXES, write_store

from actstore.analysis import cka, cka_matrix
from actstore.errors import StoresDifferError, UserError
from actstore.store import FORMAT_NAME, LayerSpec, Layout, create_writer

pytest.importorskip("xarray")


def hsic(k: np.ndarray, l: np.ndarray, debiased: bool) -> float:
    n = len(k)
    if not debiased:
        h = np.eye(n) - 1 / n
        return float(np.trace(k @ h @ l @ h))
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return float((np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
                  - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3)))


def reference(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019) with full Gram matrices in float64."""
    x, y = (v.reshape(len(v), -1).astype(np.float64) for v in (x, y))
    k, l = x @ x.T, y @ y.T
    return hsic(k, l, debiased) / np.sqrt(hsic(k, k, debiased) * hsic(l, l, debiased))


def write_layers(path, layers: dict[str, np.ndarray], chunk_images: int = 64) -> None:
    """A store of flat layers with the given values (names as write_store gives them)."""
    n = len(next(iter(layers.values())))
    specs = tuple(LayerSpec(name, v.shape[1:], v.shape[1:], "float32", (chunk_images, *v.shape[1:]))
                  for name, v in layers.items())
    writer = create_writer(path, "zarr", Layout(n_rows=n, layers=specs, chunk_images=chunk_images),
                           [f"img{i}.png" for i in range(n)], np.zeros(n, dtype=np.int64), [],
                           {"format": FORMAT_NAME, "status": "complete"})
    writer.write_rows(0, {name: v.astype("float32") for name, v in layers.items()})
    writer.close()


def related(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Two layers that share a latent signal (CKA about 0.5)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 6))
    return {"a": z @ rng.standard_normal((6, 48)) + rng.standard_normal((n, 48)) + 2,
            "b": np.maximum(z @ rng.standard_normal((6, 24)), 0) + 0.5 * rng.standard_normal((n, 24))}


@pytest.fixture(scope="module", params=list(SUFFIXES))
def stored(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / f"s{SUFFIXES[request.param]}"
    return path, write_store(path, request.param)


@pytest.mark.parametrize("debiased", [False, True])
def test_gram_form_equals_the_formula(stored, debiased):
    path, values = stored
    result = cka(path, "features.0", layer_b="classifier.4", debiased=debiased)
    assert result.form == "gram" and result.passes == 1 and result.rows == 40
    assert float(result) == pytest.approx(reference(values["features.0"], values["classifier.4"], debiased), abs=1e-6)


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_form_equals_the_formula(tmp_path, debiased):
    values = related(300)
    write_layers(tmp_path / "r.zarr", values)
    result = cka(tmp_path / "r.zarr", "a", layer_b="b", debiased=debiased)
    assert result.form == "feature" and result.passes == 1
    assert float(result) == pytest.approx(reference(values["a"], values["b"], debiased), abs=1e-6)
    assert float(cka(tmp_path / "r.zarr", "a", layer_b="a", debiased=debiased)) == pytest.approx(1.0, abs=1e-9)


def test_gram_tiles_past_the_budget_take_more_passes(tmp_path):
    values = write_store(tmp_path / "big.zarr", "zarr", n=300, conv=(40, 3, 3), chunk_images=16)   # units > rows
    result = cka(tmp_path / "big.zarr", "features.0", layer_b="classifier.4", max_memory="1MB", debiased=True)
    assert result.form == "gram" and result.passes > 1
    assert float(result) == pytest.approx(reference(values["features.0"], values["classifier.4"], True), abs=1e-6)


def test_cka_matrix_reads_each_store_once_for_all_layers(tmp_path):
    values = related(300)
    write_layers(tmp_path / "r.zarr", values)
    other = related(300, seed=1)
    write_layers(tmp_path / "o.zarr", other)
    matrix = cka_matrix(tmp_path / "r.zarr", ["a", "b"])
    assert matrix.dims == ("layer", "layer_") and list(matrix.layer.values) == ["a", "b"]
    assert matrix.attrs["passes"] == 1
    assert matrix.sel(layer="a", layer_="b") == pytest.approx(reference(values["a"], values["b"]), abs=1e-6)
    across = cka_matrix(tmp_path / "r.zarr", ["a", "b"], other=tmp_path / "o.zarr", other_layers=["b"])
    assert across.shape == (2, 1) and across.attrs["passes"] == 1
    assert across.sel(layer="a", layer_="b") == pytest.approx(reference(values["a"], other["b"]), abs=1e-6)


def test_minibatch_cka_is_close_to_exact_on_ten_thousand_rows(tmp_path):
    values = related(10_000)
    write_layers(tmp_path / "m.zarr", values, chunk_images=256)
    exact = cka(tmp_path / "m.zarr", "a", layer_b="b")
    batched = cka(tmp_path / "m.zarr", "a", layer_b="b", method="minibatch", batch_size=500, seed=7)
    assert abs(float(batched) - float(exact)) < 0.02
    assert (batched.batch_size, batched.seed, batched.method) == (500, 7, "minibatch")


def test_two_stores_are_aligned_by_file_names(tmp_path):
    first = write_store(tmp_path / "a.zarr", "zarr", n=40)
    second = write_store(tmp_path / "b.h5", "hdf5", n=36, seed=1)
    with pytest.raises(StoresDifferError, match=r"10 file name\(s\) only in the first, 6 only in the second"):
        cka(tmp_path / "a.zarr", "classifier.4", tmp_path / "b.h5")
    rows_a = np.r_[0:12, 14:24, 28:36]     # cat_0-11, dog_14-23, zebra_28-35 are in both
    rows_b = np.r_[0:12, 14:24, 28:36]     # the same names sit at the same rows of the second
    result = cka(tmp_path / "a.zarr", "classifier.4", tmp_path / "b.h5", "features.0", rows="common")
    assert result.rows == 30
    assert float(result) == pytest.approx(reference(first["classifier.4"][rows_a], second["features.0"][rows_b]),
                                          abs=1e-6)


def test_a_constant_layer_gives_nan_with_a_warning(tmp_path):
    values = related(40)
    values["b"][:] = 3.0
    write_layers(tmp_path / "c.zarr", values)
    with pytest.warns(RuntimeWarning, match="CKA of a and b is undefined"):
        assert np.isnan(cka(tmp_path / "c.zarr", "a", layer_b="b"))


def test_bad_inputs_are_refused(stored):
    path, _ = stored
    with pytest.raises(UserError, match="at least 4 rows"):
        cka(path, "features.0", layer_b="classifier.4", debiased=True, rows=[0, 1, 2])
    with pytest.raises(UserError, match="method 'fast'"):
        cka(path, "features.0", layer_b="classifier.4", method="fast")
    with pytest.raises(KeyError, match="did you mean classifier.4"):
        cka(path, "features.0", layer_b="classifier.5")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_the_torch_code_path_gives_the_same_cka(stored):
    path, values = stored
    result = cka(path, "features.0", layer_b="classifier.4", device="torch:cpu")
    assert float(result) == pytest.approx(reference(values["features.0"], values["classifier.4"]), abs=1e-6)
