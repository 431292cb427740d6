"""The line at the end of a run that names what limited it and what would help."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from actstore.cli import app
import actstore.extract as extract_package
from actstore.extract.limits import jpeg_share, limit_hint

GPU_PIL = dict(device_type="cuda", decoder="pil", jpeg_share=1.0, num_workers=8, compression="zstd",
               dtype="float32")


@pytest.mark.parametrize("stages, changes, expected", [
    ({"decode": 6.0, "forward": 2.0, "write": 1.0}, {},
     "decoding images took 67% of the batch loop: --decoder torchvision (JPEGs decoded on the GPU) would help"),
    ({"decode": 6.0, "forward": 2.0, "write": 1.0}, {"jpeg_share": 0.2},
     "decoding images took 67% of the batch loop: more --num-workers (now 8) would help, if cores are free"),
    ({"decode": 6.0, "forward": 2.0, "write": 1.0}, {"decoder": "torchvision"},
     "decoding images took 67% of the batch loop: more --num-workers (now 8) would help, if cores are free"),
    ({"decode": 5.0, "forward": 5.0}, {"device_type": "cpu", "num_workers": 2},
     "decoding images took 50% of the batch loop: more --num-workers (now 2) would help, if cores are free"),
    ({"decode": 1.0, "forward": 1.0, "write": 8.0, "writer_busy": 9.0, "setup": 30.0}, {},
     "writing took 80% of the batch loop: --compression lz4 or --dtype float16 would help"),
    ({"decode": 1.0, "forward": 1.0, "write": 8.0}, {"compression": "lz4"},
     "writing took 80% of the batch loop: --dtype float16 would help"),
    ({"decode": 1.0, "forward": 1.0, "write": 8.0}, {"compression": "none", "dtype": "float16"},
     "writing took 80% of the batch loop, already with --compression none and --dtype float16: "
     "the disk is the limit"),
    ({"decode": 4.0, "forward": 5.0, "write": 1.0}, {}, None),     # no stage above half: balanced
    ({"decode": 1.0, "forward": 8.0, "write": 1.0}, {}, None),     # the model is the limit: as it should be
    ({"decode": 2.0, "forward": 0.2, "write": 0.1, "setup": 9.0}, {}, None),   # too short a loop to tell
    ({}, {}, None),
])
def test_the_hint_names_the_limiting_stage_and_what_would_help(stages, changes, expected):
    assert limit_hint(stages, **{**GPU_PIL, **changes}) == expected


def test_jpeg_share_counts_jpeg_suffixes_in_any_case():
    assert jpeg_share(("a.jpg", "b.JPEG", "c.png", "d/e.jpeg")) == 0.75
    assert jpeg_share(()) == 0.0


def test_a_write_bound_cli_run_says_so_in_one_line_unless_quiet(tmp_path, image_dir, weights_file, monkeypatch):
    """The run's own stage clock, with 100 s of waiting for the writer added to
    it (a slowed-down writer would make the test as slow and, on a loaded
    machine, flaky): the CLI shows the rule's line once, and not with --quiet."""
    run_batches = extract_package.run_batches

    def write_bound(*args, stages, **kwargs):
        rows = run_batches(*args, stages=stages, **kwargs)
        stages["write"] += 100.0
        return rows

    monkeypatch.setattr(extract_package, "run_batches", write_bound)
    args = ["extract", "--model-name", "alexnet", "--model-path", weights_file("alexnet"), "--module-name",
            "classifier.4", "--in-path", image_dir, "--batch-size", "12", "--chunk-images", "4",
            "--num-workers", "0", "--compression", "zstd"]
    for quiet in (False, True):
        result = CliRunner().invoke(app, list(map(str, args + ["--out-path", tmp_path / f"{quiet}.zarr"]
                                                     + (["--quiet"] if quiet else []))))
        assert result.exit_code == 0, result.output
        lines = [line for line in result.stderr.splitlines() if line.startswith("warning: writing took")]
        if quiet:
            assert lines == []
        else:
            assert len(lines) == 1 and lines[0].endswith(": --compression lz4 or --dtype float16 would help")
