"""The rdm, cka and pca commands: one library call each, a saved result, a
picture, and a one-line summary."""
from __future__ import annotations

import re

import numpy as np
import pytest
from synthetic import write_store
from typer.testing import CliRunner

from actstore.cli import app

pytest.importorskip("xarray")
runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "s.zarr"
    return path, write_store(path, "zarr", n=40)


def run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_rdm_command_saves_the_matrix_and_a_picture(store, tmp_path):
    path, values = store
    output = run("rdm", path, "--layer", "classifier.4", "--metric", "euclidean", "--out", tmp_path / "r.npy",
                 "--plot", tmp_path / "r.png", "--quiet")
    saved = np.load(tmp_path / "r.npy")
    x = values["classifier.4"].astype(np.float64)
    np.testing.assert_allclose(saved, np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)), atol=1e-6)
    assert (tmp_path / "r.png").stat().st_size > 0
    assert "shape (40, 40), 1 pass(es)" in output and "peak memory" in output
    run("rdm", path, "--layer", "features.0", "--by", "class", "--out", tmp_path / "r.csv", "--quiet")
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == "class,cat,dog,zebra"
    failed = runner.invoke(app, ["rdm", str(path), "--layer", "features.9", "--quiet"])
    assert failed.exit_code == 1 and "did you mean features.0" in failed.output


def test_rdm_command_chooses_the_precision_of_the_products(store, tmp_path):
    path, values = store
    x = values["features.0"].reshape(40, -1).astype(np.float64)
    for precision, products, tolerance in (("auto", "float32", 1e-6), ("float64", "float64", 1e-12)):
        output = run("rdm", path, "--layer", "features.0", "--precision", precision, "--out", tmp_path / "r.npy",
                     "--quiet")
        assert f"(correlation, by image, {products} products)" in output
        np.testing.assert_allclose(np.load(tmp_path / "r.npy"), 1 - np.corrcoef(x), atol=tolerance, rtol=0)
    failed = runner.invoke(app, ["rdm", str(path), "--layer", "features.0", "--precision", "half", "--quiet"])
    assert failed.exit_code == 1 and failed.output.strip().splitlines() == [
        "error: precision 'half': use one of auto, float64, float32"]


def test_cka_command_prints_the_matrix(store, tmp_path):
    path, _ = store
    output = run("cka", path, "--layer", "features.0", "--layer", "classifier.4", "--out", tmp_path / "c.nc",
                 "--plot", tmp_path / "c.png", "--quiet")
    assert "features.0" in output.splitlines()[0] and "1.0000" in output and "shape (2, 2)" in output
    assert (tmp_path / "c.nc").exists() and (tmp_path / "c.png").exists()


def test_pca_command_writes_scores_and_components(store, tmp_path):
    path, _ = store
    output = run("pca", path, "--layer", "features.0", "--components", "3", "--write-to", tmp_path / "p.zarr",
                 "--out", tmp_path / "p.zarr.npy", "--plot", tmp_path / "p.png", "--quiet")
    assert "explained variance ratio:" in output and "scores in" in output
    assert "pca of features.0 (gram): shape (3, 6, 5, 4), 2 pass(es)" in output   # 40 rows, 120 units
    randomized = run("pca", path, "--layer", "features.0", "--components", "3", "--method", "randomized", "--quiet")
    assert re.search(r"pca of features.0 \(randomized, \d+ power iterations\): shape \(3, 6, 5, 4\), 1 pass",
                     randomized)
    assert np.load(tmp_path / "p.zarr.npy").shape == (3, 6, 5, 4)
    from actstore import open_store
    with open_store(tmp_path / "p.zarr") as scores:
        assert scores.layers == ["features.0.pca3"] and scores["features.0.pca3"].shape == (40, 3)
