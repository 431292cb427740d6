"""Peak memory is bounded by a few batches, not by the number of images."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_images

ROOT = Path(__file__).resolve().parents[2]
BYTES_PER_IMAGE = 64 * 112 * 112 * 4       # resnet18 conv1, float32: 3.2 MB

CHILD = textwrap.dedent("""
    import json, resource, sys
    import torch, torchvision          # their libraries alone take ~700 MB of RSS here
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from actstore import extract
    result = extract(model_name="resnet18", model_path=sys.argv[1], module_names=["conv1"],
                     in_path=sys.argv[2], out_path=sys.argv[3], batch_size=16, num_workers=0,
                     quiet=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": result.rows_written, "peak_mb": peak, "above_torch_mb": peak - baseline}))
""")


def peak_rss_mb(weights: Path, images: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(weights), str(images), str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_stays_flat_as_the_image_count_grows(tmp_path, weights_file):
    weights = weights_file("resnet18")
    small = make_images(tmp_path / "small", "flat", per_class=16)      # 48 images
    large = make_images(tmp_path / "large", "flat", per_class=100)     # 300 images
    few = peak_rss_mb(weights, small, tmp_path / "small.zarr")
    many = peak_rss_mb(weights, large, tmp_path / "large.zarr")
    assert (few["rows"], many["rows"]) == (48, 300)
    extra_raw_mb = (300 - 48) * BYTES_PER_IMAGE / 2**20                # 771 MB more activations
    assert many["peak_mb"] - few["peak_mb"] < 0.15 * extra_raw_mb, (few, many)
    # A few batches of 16 images (51 MB each) in flight, far below the 919 MB of activations.
    assert many["above_torch_mb"] < 0.5 * 300 * BYTES_PER_IMAGE / 2**20, (few, many)
