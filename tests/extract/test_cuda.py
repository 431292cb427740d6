"""The CUDA path: pinned host buffers filled by non-blocking copies on a side
stream, --amp float16, --channels-last on cuDNN, nvJPEG decoding. These run
only where a GPU is present (``python -m pytest -m cuda``); the same options
are tested on the CPU in test_extract.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_images, reference_activations

from actstore import extract, open_store
from actstore.store.metadata.schema import validate_store

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")]

ON_GPU = dict(device="cuda", num_workers=2, quiet=True)


def _close(stored: np.ndarray, expected: np.ndarray, tolerance: float) -> None:
    """cuDNN picks other algorithms than the CPU (TF32 where allowed): close, not equal."""
    assert stored.shape == expected.shape
    assert np.abs(stored - expected).max() <= tolerance * np.abs(expected).max()


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_cuda_activations_equal_the_cpu_reference(tmp_path, weights_file, suffix):
    # 36 images in batches of 4: nine batches, more than the pool of pinned
    # buffers holds, so buffers are reused while earlier copies are in flight.
    images = make_images(tmp_path / "images", per_class=12)
    weights = weights_file("alexnet")
    out = tmp_path / f"gpu{suffix}"
    result = extract(model_name="alexnet", model_path=weights, module_names=["features.0", "classifier.4"],
                     in_path=images, out_path=out, batch_size=4, chunk_images=8, **ON_GPU)
    assert result.complete
    with open_store(out) as store:
        validate_store(store)
        assert store.attrs["device"].startswith("cuda")
        for layer in ("features.0", "classifier.4"):
            expected = reference_activations("alexnet", weights, images, store.file_names, layer)
            _close(store[layer][:], expected, 2e-3)


def test_cuda_flattened_float16_storage(tmp_path, image_dir, weights_file):
    weights = weights_file("resnet18")
    out = tmp_path / "f16.zarr"
    extract(model_name="resnet18", model_path=weights, module_names=["layer1.0.conv1", "fc"],
            flatten_acts=True, dtype="float16", in_path=image_dir, out_path=out, batch_size=5, **ON_GPU)
    with open_store(out) as store:
        for layer in ("layer1.0.conv1", "fc"):
            stored = store[layer][:]
            assert stored.dtype == np.float16 and stored.ndim == 2
            expected = reference_activations("resnet18", weights, image_dir, store.file_names, layer)
            _close(stored.astype(np.float32), expected.reshape(len(expected), -1), 5e-3)


@pytest.mark.parametrize("options", [dict(amp="float16"), dict(amp="bfloat16"), dict(channels_last=True),
                                     dict(amp="float16", channels_last=True)])
def test_cuda_amp_and_channels_last_stay_close(tmp_path, image_dir, weights_file, options):
    weights = weights_file("resnet18")
    out = tmp_path / "opt.h5"
    extract(model_name="resnet18", model_path=weights, module_names=["layer2.0.conv1", "fc"],
            in_path=image_dir, out_path=out, batch_size=5, **ON_GPU, **options)
    with open_store(out) as store:
        assert store.attrs["fingerprint"]["amp"] == options.get("amp")
        assert store.attrs["fingerprint"]["channels_last"] is options.get("channels_last", False)
        for layer in ("layer2.0.conv1", "fc"):
            stored = store[layer][:]
            assert stored.dtype == np.float32
            expected = reference_activations("resnet18", weights, image_dir, store.file_names, layer)
            _close(stored, expected, 0.05 if "amp" in options else 2e-3)


def test_cuda_torchvision_decoder(tmp_path, image_dir, weights_file):
    weights = weights_file("alexnet")
    out = tmp_path / "nvjpeg.zarr"
    extract(model_name="alexnet", model_path=weights, module_names=["features.2", "classifier.6"],
            decoder="torchvision", in_path=image_dir, out_path=out, batch_size=5, **ON_GPU)
    with open_store(out) as store:
        assert store.attrs["fingerprint"]["decoder"] == "torchvision" and store.complete
        for layer in ("features.2", "classifier.6"):
            expected = reference_activations("alexnet", weights, image_dir, store.file_names, layer)
            assert np.abs(store[layer][:] - expected).mean() <= 0.05 * np.abs(expected).mean()
