"""--dry-run: sizes per layer, a measured estimate of the store, and the free-space guard."""
from pathlib import Path

import pytest
from conftest import make_images
from typer.testing import CliRunner

from actstore import extract, open_store
from actstore.cli import app
from actstore.errors import UserError
from actstore.extract.plan import human_size

LAYERS = ["features.2", "classifier.5"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("plan") / "in", "classes", per_class=40)   # 120 images


# bfloat16 outputs stored as float32 compress ~3x better: the sample must run with --amp too.
@pytest.mark.parametrize("suffix, amp", [(".zarr", None), (".h5", None), (".zarr", "bfloat16")])
def test_dry_run_estimate_is_within_15_percent_of_the_real_store(tmp_path, images, weights_file, suffix, amp):
    common = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=LAYERS,
                  in_path=images, out_path=tmp_path / f"s{suffix}", batch_size=8, num_workers=0, quiet=True,
                  amp=amp)
    dry = extract(dry_run=True, **common)
    assert not (tmp_path / f"s{suffix}").exists()
    plan = dry.plan
    assert plan.rows == 120 and plan.sample_images == 64
    assert [(p.module_name, p.shape, p.bytes_per_image) for p in plan.layers] == [
        ("features.2", (64, 27, 27), 64 * 27 * 27 * 4), ("classifier.5", (4096,), 4096 * 4)]
    assert plan.raw_bytes == 120 * (64 * 27 * 27 * 4 + 4096 * 4)
    extract(**common)
    with open_store(tmp_path / f"s{suffix}") as store:
        summary = store.summary()
    for layer in plan.layers:
        real = summary["layers"][layer.module_name]["bytes_stored"]
        assert abs(layer.estimated_bytes - real) <= 0.15 * real, (layer, real)


def test_a_run_that_would_not_fit_refuses_unless_forced(tmp_path, images, weights_file, monkeypatch):
    monkeypatch.setattr("actstore.extract.space.free_space", lambda path: 1_000_000)
    common = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=LAYERS,
                  in_path=images, out_path=tmp_path / "s.zarr", batch_size=8, num_workers=0, quiet=True)
    with pytest.raises(UserError, match=r"the store needs about \d+\.\d MB but .*s.zarr has 1.0 MB free: .*--force"):
        extract(**common)
    assert not (tmp_path / "s.zarr").exists()
    assert extract(force=True, **common).complete


def test_dry_run_cli_prints_the_table(tmp_path, images, weights_file):
    result = CliRunner().invoke(app, ["extract", "--model-name", "alexnet", "--model-path", str(weights_file("alexnet")),
                                      "--module-name", "classifier.5", "--in-path", str(images),
                                      "--out-path", str(tmp_path / "s.h5"), "--dry-run", "-q"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["layer", "shape", "per", "image", "bytes/image", "raw", "total", "estimated", "hdf5"]
    assert lines[1].split()[:3] == ["classifier.5", "4096", "16,384"] and "2.0 MB" in lines[1]
    assert lines[-1].startswith("120 images; estimate from 64 sampled images; free space:")
    assert not (tmp_path / "s.h5").exists()


def test_human_size():
    assert [human_size(n) for n in (999, 1000, 1_234_567, 5 * 10**12, None)] == \
        ["999 B", "1.0 KB", "1.2 MB", "5.0 TB", "unknown"]
