"""The command line: the original tool's flags, one-line errors, nothing lost."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_activations
from typer.testing import CliRunner

from actstore import open_store
from actstore.cli import app
from actstore.store.metadata.schema import validate_store

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def run(*args: str, stdin: str | None = None, entry=("-m", "actstore")) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *entry, *map(str, args)], capture_output=True, text=True,
                          input=stdin, cwd=ROOT, timeout=300)


def invoke(*args):
    return runner.invoke(app, list(map(str, args)))


def test_original_underscore_flags_build_a_store_through_a_subprocess(tmp_path, image_dir, weights_file):
    weights = weights_file("alexnet")
    out = tmp_path / "old.h5"
    done = run("extract", "--model_name", "alexnet", "--module_name", "features.3", "--module_name",
               "classifier.1", "--in_path", image_dir, "--out_path", out, "--model_path", weights,
               "--batch_size", "5", "--rnd_seed", "1", "--num-workers", "1", "--file_format", "hdf5")
    assert done.returncode == 0, done.stderr
    assert "wrote 12 rows of 2 layer(s)" in done.stdout and "store complete" in done.stdout
    assert "extract: 100%" in done.stderr and "img/s" in done.stderr      # the progress bar
    with open_store(out) as store:
        validate_store(store)
        assert store.attrs["command_line"].startswith("actstore extract --model_name alexnet")
        expected = reference_activations("alexnet", weights, image_dir, store.file_names, "features.3")
        np.testing.assert_allclose(store["features.3"][:], expected, rtol=1e-5, atol=1e-5)


def test_cli_py_from_the_checkout_runs_the_same_cli():
    done = run("models", entry=("cli.py",))
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert "alexnet *" in lines and "vgg19_bn *" in lines and "resnet18" in lines


def test_errors_are_one_line_without_traceback(tmp_path, image_dir):
    done = run("extract", "--model-name", "alexnett", "--module-name", "features.0",
               "--in-path", image_dir, "--out-path", tmp_path / "x.zarr")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: unknown model 'alexnett'; did you mean alexnet? (see `actstore models`)"
    assert not (tmp_path / "x.zarr").exists()


def test_debug_shows_the_traceback(tmp_path, image_dir):
    done = run("--debug", "extract", "--model-name", "alexnett", "--module-name", "features.0",
               "--in-path", image_dir, "--out-path", tmp_path / "x.zarr")
    assert done.returncode == 1 and "Traceback" in done.stderr


def test_weights_download_fails_fast_and_clearly_offline(tmp_path, image_dir):
    done = subprocess.run([sys.executable, "-m", "actstore", "extract", "--model-name", "alexnet",
                           "--module-name", "features.0", "--in-path", str(image_dir),
                           "--out-path", str(tmp_path / "x.zarr")], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "TORCH_HOME": str(tmp_path / "th"),
                                            "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
                                            "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"})
    assert done.returncode == 1
    assert "could not download AlexNet_Weights.IMAGENET1K_V1" in done.stderr
    assert "--model-path" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--module-name", "features.99"], "unknown module 'features.99'; did you mean features.9"),
    (["--module-name", "features.0", "--fraction", "1.5"], "--fraction must be in (0, 1], got 1.5"),
    (["--module-name", "features.0", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    pytest.param(["--module-name", "features.0", "--device", "cuda"],
                 "--device cuda: no CUDA device is available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    (["--module-name", "features.0", "--dtype", "int8"], "unknown --dtype 'int8'"),
    (["--module-name", "features.0", "--compression", "brotli"], "unknown --compression 'brotli'"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, image_dir, weights_file, args, message):
    out = tmp_path / "x.zarr"
    result = invoke("extract", "--model-name", "alexnet", "--model-path", weights_file("alexnet"),
                    "--in-path", image_dir, "--out-path", out, "-q", *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert not out.exists()


def test_missing_and_empty_in_path(tmp_path, weights_file):
    (tmp_path / "empty").mkdir()
    for folder, message in [(tmp_path / "nope", "does not exist"), (tmp_path / "empty", "holds no images")]:
        result = invoke("extract", "--model-name", "alexnet", "--model-path", weights_file("alexnet"),
                        "--module-name", "features.0", "--in-path", folder, "--out-path", tmp_path / "o.zarr")
        assert result.exit_code == 1 and message in result.stderr


def test_overwrite_never_deletes_a_folder_that_is_not_a_store(tmp_path, image_dir, weights_file):
    precious = tmp_path / "results.zarr"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    for extra in ([], ["--overwrite"]):
        result = invoke("extract", "--model-name", "alexnet", "--model-path", weights_file("alexnet"),
                        "--module-name", "classifier.6", "--in-path", image_dir, "--out-path", precious, "-q", *extra)
        assert result.exit_code == 1
        assert "is not an actstore store" in result.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_store_from_another_run_is_refused_unless_overwrite(tmp_path, image_dir, weights_file):
    out = tmp_path / "s.zarr"
    base = ["extract", "--model-name", "alexnet", "--model-path", weights_file("alexnet"),
            "--in-path", image_dir, "--out-path", out, "-q"]
    assert invoke(*base, "--module-name", "classifier.6").exit_code == 0
    refused = invoke(*base, "--module-name", "classifier.4")
    assert refused.exit_code == 1
    assert "holds a store from a different run (chunks, layers, shapes differ" in refused.stderr
    with open_store(out) as store:
        assert store.layers == ["classifier.6"]
    assert invoke(*base, "--module-name", "classifier.4", "--overwrite").exit_code == 0
    with open_store(out) as store:
        assert store.layers == ["classifier.4"] and store.complete


def test_rerunning_a_complete_store_does_nothing(tmp_path, image_dir, weights_file):
    base = ["extract", "--model-name", "alexnet", "--model-path", weights_file("alexnet"),
            "--module-name", "classifier.6", "--in-path", image_dir, "--out-path", tmp_path / "s.h5", "-q"]
    assert invoke(*base).exit_code == 0
    again = invoke(*base)
    assert again.exit_code == 0 and "already complete (12 rows); nothing to do" in again.stderr


def test_layers_prints_shapes_and_bytes_per_image():
    result = invoke("layers", "alexnet")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "64x55x55" in lines["features.0"] and "774,400" in lines["features.0"]
    assert "Linear" in lines["classifier.4"] and "4096" in lines["classifier.4"]


def test_interactive_reprompts_on_a_typo_then_extracts(tmp_path, image_dir, weights_file):
    out = tmp_path / "i.zarr"
    done = run("extract", "--model_name", "alexnet", "--interactive", "--in_path", image_dir,
               "--out_path", out, "--model_path", weights_file("alexnet"), "-q", "--num-workers", "0",
               stdin="classifer.6\nclassifier.6\n")
    assert done.returncode == 0, done.stderr
    assert "unknown module 'classifer.6'; did you mean classifier.6" in done.stderr
    assert "features.0" in done.stderr       # the tree was shown
    with open_store(out) as store:
        assert store.layers == ["classifier.6"]


def test_info_shows_the_store_at_a_glance(tmp_path, image_dir, weights_file):
    out = tmp_path / "s.zarr"
    assert invoke("extract", "--model-name", "alexnet", "--model-path", weights_file("alexnet"),
                  "--module-name", "features.4", "--in-path", image_dir, "--out-path", out, "-q").exit_code == 0
    result = invoke("info", out)
    assert result.exit_code == 0
    text = result.stdout
    assert "status: complete" in text and "rows: 12/12" in text and "model: alexnet" in text
    assert "features.4: (12, 192, 27, 27) (image, channel, height, width) chunks (16, 16, 27, 27)" in text
    assert "ratio" in text and "torch_version" in text and "preprocessing" in text


def test_an_out_path_without_store_suffix_gets_the_original_text_layout(tmp_path, image_dir, weights_file):
    out = tmp_path / "activations"
    result = invoke("extract", "--model_name", "alexnet", "--model_path", weights_file("alexnet"),
                    "--module_name", "classifier.6", "--in_path", image_dir, "--out_path", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert "writing the original THINGSvision text layout" in result.stderr
    folder = out / "alexnet" / "classifier.6"
    assert sorted(p.name for p in folder.iterdir()) == ["activations.txt", "file_names.txt", "targets.txt"]
    assert np.loadtxt(folder / "activations.txt").shape == (12, 1000)
