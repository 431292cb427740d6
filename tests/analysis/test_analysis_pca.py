"""PCA from stores against scikit-learn's full-SVD PCA, each way of computing
it, and scores written back as a layer with provenance."""
from __future__ import annotations

import numpy as np
import pytest
from synthetic import SUFFIXES, write_store

from actstore import open_store
from actstore.analysis import pca
from actstore.errors import UserError

pytest.importorskip("xarray")
sklearn_decomposition = pytest.importorskip("sklearn.decomposition")
K = 5


@pytest.fixture(scope="module", params=list(SUFFIXES))
def stored(request, tmp_path_factory):
    """A store whose conv layer is a rank-8 signal with a decaying spectrum."""
    path = tmp_path_factory.mktemp(request.param) / f"s{SUFFIXES[request.param]}"
    values = write_store(path, request.param, n=300, conv=(8, 6, 5), rank=8)
    flat = values["features.0"].reshape(300, -1).astype(np.float64)
    return path, flat, sklearn_decomposition.PCA(K, svd_solver="full").fit(flat)


def assert_matches(result, reference) -> None:
    np.testing.assert_allclose(result.explained_variance_ratio.values, reference.explained_variance_ratio_, rtol=1e-4)
    np.testing.assert_allclose(result.explained_variance.values, reference.explained_variance_, rtol=1e-4)
    cosines = np.abs(np.sum(result.flat_components * reference.components_, axis=1))
    assert cosines.min() >= 0.9999
    np.testing.assert_allclose(result.mean.values.reshape(-1), reference.mean_, atol=1e-6)


@pytest.mark.parametrize("method", ["covariance", "gram", "randomized"])
def test_pca_equals_scikit_learn(stored, method):
    path, _, reference = stored
    result = pca(path, "features.0", K, method=method)
    assert_matches(result, reference)
    assert result.components.dims == ("component", "channel", "height", "width")
    assert result.components.shape == (K, 8, 6, 5) and result.method == method
    # gram: the layer is kept; randomized: the layer is held in RAM, iterations until the values settle
    assert result.passes == 1
    assert (result.power_iterations is not None) == (method == "randomized")


def test_randomized_over_the_store_takes_2q_plus_2_passes_and_fixed_iterations_are_kept(stored):
    path, _, reference = stored
    streamed = pca(path, "features.0", K, method="randomized", max_memory="1MB")
    assert_matches(streamed, reference)
    assert streamed.passes == 16 and streamed.power_iterations == 7     # scikit-learn's n_iter="auto"
    held = pca(path, "features.0", K, method="randomized", power_iterations=9)
    assert held.passes == 1 and held.power_iterations == 9
    assert_matches(held, reference)


def test_auto_holds_a_wide_layer_in_ram_and_iterates_until_the_values_settle(tmp_path):
    path = tmp_path / "wide.zarr"
    values = write_store(path, "zarr", n=400, conv=(16, 6, 5), rank=8)
    flat = values["features.0"].reshape(400, -1).astype(np.float64)
    reference = sklearn_decomposition.PCA(K, svd_solver="full").fit(flat)
    result = pca(path, "features.0", K)
    assert result.method == "randomized" and result.passes == 1
    assert 1 <= result.power_iterations < 40
    assert_matches(result, reference)
    np.testing.assert_allclose(result.total_variance, flat.var(axis=0, ddof=1).sum(), rtol=1e-10)


def test_auto_picks_an_exact_way_for_few_units_and_randomized_past_the_budget(stored):
    path, flat, reference = stored
    exact = pca(path, "features.0", K, scores=True)
    assert exact.method == "covariance" and exact.passes == 2
    signs = np.sign(np.sum(exact.flat_components * reference.components_, axis=1))
    np.testing.assert_allclose(exact.scores.values, reference.transform(flat) * signs, atol=1e-6)
    assert exact.scores.dims == ("image", "component") and exact.scores.class_name.values[0] == "cat"
    tight = pca(path, "features.0", K, max_memory="1MB")
    assert tight.method == "randomized"
    assert_matches(tight, reference)


def test_scores_are_written_into_the_same_store_with_provenance(stored):
    path, flat, reference = stored
    result = pca(path, "features.0", K, rows=np.arange(200), write_to=path)
    assert result.written.endswith(":features.0.pca5")
    fitted = sklearn_decomposition.PCA(K, svd_solver="full").fit(flat[:200])
    signs = np.sign(np.sum(result.flat_components * fitted.components_, axis=1))
    with open_store(path) as store:
        assert "features.0.pca5" in store.layers
        np.testing.assert_allclose(store["features.0.pca5"][:], fitted.transform(flat) * signs, atol=1e-3)
        attrs = store.layer_attrs("features.0.pca5")
        assert attrs["source_layer"] == "features.0" and attrs["fitted_rows"] == [[0, 199]]
        assert attrs["n_fitted"] == 200 and len(attrs["explained_variance_ratio"]) == K
        derived = store.derived("features.0.pca5")
        np.testing.assert_allclose(derived["components"], result.flat_components)
        assert derived["mean"].shape == (240,)
    with pytest.raises(UserError, match="already holds a layer 'features.0.pca5'"):
        pca(path, "features.0", K, write_to=path)


def test_scores_go_to_a_new_store_keeping_names_and_targets(stored, tmp_path):
    path, flat, reference = stored
    out = tmp_path / f"scores{path.suffix}"
    result = pca(path, "features.0", 3, write_to=out)
    with open_store(path) as source, open_store(out) as store:
        assert store.layers == ["features.0.pca3"] and store.complete
        assert list(store.file_names) == list(source.file_names)
        np.testing.assert_array_equal(store.targets, source.targets)
        assert store.layer_attrs("features.0.pca3")["derived_from"] == str(source.path)
        np.testing.assert_allclose(store["features.0.pca3"][:], result.transform(flat), atol=1e-3)


def test_bad_requests_are_refused(stored):
    path, _, _ = stored
    with pytest.raises(UserError, match="n_components=0"):
        pca(path, "features.0", 0)
    with pytest.raises(UserError, match="method 'svd'"):
        pca(path, "features.0", 2, method="svd")
    with pytest.raises(KeyError, match="did you mean features.0"):
        pca(path, "feature.0", 2)


def test_held_iterations_that_do_not_settle_warn_and_name_the_exact_ways(stored, monkeypatch):
    import importlib
    module = importlib.import_module("actstore.analysis.pca")   # the module (the package exports the function)
    path, _, _ = stored
    monkeypatch.setattr(module, "MAX_ITERATIONS", 1)
    with pytest.warns(RuntimeWarning, match="did not settle.*method='gram' or 'covariance' is exact"):
        result = pca(path, "features.0", K, method="randomized")
    assert result.power_iterations == 1
