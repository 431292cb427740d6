"""Shared fixtures: tiny image folders the tests generate, random weights saved to disk,
and an independent reference forward pass to compare stored activations against.

torch is imported only inside the fixtures and helpers that need it (and a
test that asks for one is skipped where torch is missing), so the store tests
run without it."""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("cat", "dog", "zebra")


def make_images(root: Path, layout: str = "classes", per_class: int = 4, seed: int = 0) -> Path:
    """A folder of small images in assorted modes (RGB, L, RGBA, P, CMYK) and formats."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    modes = ["RGB", "L", "RGBA", "P", "CMYK", "RGB"]
    suffixes = [".png", ".jpg", ".png", ".png", ".jpg", ".JPEG"]

    def one(path: Path, k: int) -> None:
        h, w = int(rng.integers(24, 48)), int(rng.integers(24, 48))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        mode = modes[k % len(modes)]
        image = image.convert(mode) if mode != "P" else image.quantize(16)
        image.save(path.with_suffix(suffixes[k % len(suffixes)]))

    if layout == "classes":
        for c in CLASSES:
            (root / c).mkdir(exist_ok=True)
            for i in range(1, per_class + 1):
                one(root / c / f"{c}_img{i}", i)
    else:
        for i in range(1, per_class * len(CLASSES) + 1):
            one(root / f"img{i}", i)
    return root


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """3 classes x 4 images: cat/cat_img1.png ... zebra/zebra_img4.png."""
    return make_images(tmp_path_factory.mktemp("images") / "in", "classes")


@pytest.fixture(scope="session")
def flat_dir(tmp_path_factory) -> Path:
    """12 images in one folder: img1 ... img12."""
    return make_images(tmp_path_factory.mktemp("flat") / "in", "flat")


@pytest.fixture(autouse=True)
def _restore_environment():
    """Some libraries (dask.distributed's LocalCluster) set OMP_NUM_THREADS=1
    in this process's environment; later subprocesses would then run torch on
    one thread and differ from in-process runs in the last bits."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def child_env(**extra: str) -> dict[str, str]:
    """Environment for an extraction subprocess whose results are compared bit
    for bit with this process's: the same number of torch threads."""
    import torch
    threads = str(torch.get_num_threads())
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **extra}


def save_random_weights(model_name: str, path: Path, seed: int = 1) -> Path:
    import torch
    import torchvision
    torch.manual_seed(seed)
    model = torchvision.models.get_model(model_name, weights=None)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """Factory: a state-dict file of random weights for a torchvision model, saved once."""
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("weights")
    cache: dict[str, Path] = {}

    def get(model_name: str) -> Path:
        if model_name not in cache:
            cache[model_name] = save_random_weights(model_name, folder / f"{model_name}.pth")
        return cache[model_name]

    return get


def reference_activations(model_name: str, weights: Path, root: Path, file_names, module_name: str) -> np.ndarray:
    """Activations computed without actstore: torchvision model, state dict, the
    DEFAULT weights' transforms, a plain forward hook that copies the output."""
    import torch
    import torchvision
    model = torchvision.models.get_model(model_name, weights=None)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    transform = torchvision.models.get_model_weights(model_name).DEFAULT.transforms()
    captured = []
    module = dict(model.named_modules())[module_name]
    handle = module.register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
    with torch.no_grad():
        for name in file_names:
            with Image.open(root / name) as image:
                model(transform(image.convert("RGB")).unsqueeze(0))
    handle.remove()
    return torch.cat(captured).numpy()


BUCKET = "actstore-test"   # the bucket of the S3 server below


@pytest.fixture(scope="session")
def s3_env():
    """A moto S3 server on 127.0.0.1 with one bucket; this process and its
    subprocesses reach it through fsspec's config and dummy AWS credentials.
    Yields the environment for subprocesses. One for the whole session:
    tests in several folders use it (fsspec caches its S3 filesystem)."""
    fsspec = pytest.importorskip("fsspec")
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # one log line per request otherwise
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    variables = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "FSSPEC_S3_ENDPOINT_URL": endpoint}
    saved_conf = fsspec.config.conf.get("s3")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
        fsspec.filesystem("s3").mkdir(BUCKET)
        try:
            yield {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        finally:
            if saved_conf is None:
                fsspec.config.conf.pop("s3", None)
            else:
                fsspec.config.conf["s3"] = saved_conf
            server.stop()
