"""Extraction end to end: stored activations equal an independent forward pass."""
import hashlib

import numpy as np
import pytest
import torch
import torchvision
from conftest import reference_activations

from actstore import extract, open_store
from actstore.capture import Extractor
from actstore.errors import UserError
from actstore.images import ImageSet
from actstore.models import from_module
from actstore.store.metadata.schema import validate_store

FAST = dict(batch_size=5, num_workers=0, quiet=True)


def assert_equals_reference(store, model_name, weights, root, layers, rtol: float) -> None:
    """Every stored layer equals an independent forward pass (float32 on the CPU)."""
    for layer in layers:
        expected = reference_activations(model_name, weights, root, store.file_names, layer)
        np.testing.assert_allclose(store[layer][:], expected, rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_alexnet_two_layers_equal_the_reference_forward_pass(tmp_path, image_dir, weights_file, suffix):
    weights = weights_file("alexnet")
    out = tmp_path / f"alexnet{suffix}"
    result = extract(model_name="alexnet", model_path=weights, module_names=["features.0", "classifier.4"],
                     in_path=image_dir, out_path=out, **FAST)
    assert result.complete and result.rows_written == 12
    with open_store(out) as store:
        validate_store(store)
        assert store.format == ("zarr" if suffix == ".zarr" else "hdf5")
        assert store.layers == sorted(["features.0", "classifier.4"]) or set(store.layers) == {"features.0", "classifier.4"}
        assert list(store.file_names) == list(ImageSet.scan(image_dir).file_names)
        assert store.targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4
        assert store.classes == ["cat", "dog", "zebra"]
        assert store.status == "complete" and store.written.all()
        assert store.attrs["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert store["features.0"].shape == (12, 64, 55, 55)
        assert store["features.0"].dims == ("image", "channel", "height", "width")
        assert store["classifier.4"].shape == (12, 4096)
        assert_equals_reference(store, "alexnet", weights, image_dir, ["features.0", "classifier.4"], rtol=1e-5)


def test_conv_output_is_stored_before_the_in_place_relu(tmp_path, image_dir, weights_file):
    weights = weights_file("alexnet")
    out = tmp_path / "s.zarr"
    extract(model_name="alexnet", model_path=weights, module_names=["features.0", "features.1"],
            in_path=image_dir, out_path=out, **FAST)
    with open_store(out) as store:
        conv, relu = store["features.0"][:], store["features.1"][:]
    assert (conv < 0).sum() > 1000
    assert np.array_equal(relu, np.maximum(conv, 0))


def test_flattened_layers_keep_the_native_shape_in_attributes(tmp_path, image_dir, weights_file):
    weights = weights_file("alexnet")
    out = tmp_path / "flat.h5"
    extract(model_name="alexnet", model_path=weights, module_names=["features.11"], flatten_acts=True,
            in_path=image_dir, out_path=out, **FAST)
    with open_store(out) as store:
        validate_store(store)
        assert store["features.11"].shape == (12, 256 * 13 * 13)
        assert store.layer_attrs("features.11")["native_shape"] == [256, 13, 13]
        assert store["features.11"].dims == ("image", "unit")
        expected = reference_activations("alexnet", weights, image_dir, store.file_names, "features.11")
        np.testing.assert_allclose(store["features.11"][:], expected.reshape(12, -1), rtol=1e-5, atol=1e-5)


def test_resnet_block_layer_and_flat_folder(tmp_path, flat_dir, weights_file):
    weights = weights_file("resnet18")
    out = tmp_path / "r.zarr"
    extract(model_name="resnet18", model_path=weights, module_names=["layer4.1.conv2", "avgpool"],
            in_path=flat_dir, out_path=out, **FAST)
    with open_store(out) as store:
        assert store.targets.tolist() == list(range(12))
        assert store.classes == []
        assert store.file_names[:3].tolist() == ["img1.jpg", "img2.png", "img3.png"]
        assert_equals_reference(store, "resnet18", weights, flat_dir, ["layer4.1.conv2", "avgpool"], rtol=1e-4)


def test_float16_storage_is_the_rounded_float32_activation(tmp_path, image_dir, weights_file):
    weights = weights_file("alexnet")
    out = tmp_path / "half.zarr"
    extract(model_name="alexnet", model_path=weights, module_names=["classifier.4"], dtype="float16",
            in_path=image_dir, out_path=out, **FAST)
    with open_store(out) as store:
        stored = store["classifier.4"][:]
        assert stored.dtype == np.float16 and store.attrs["dtype"] == "float16"
    expected = reference_activations("alexnet", weights, image_dir, store.file_names, "classifier.4")
    np.testing.assert_allclose(stored.astype(np.float32), expected, rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("compression", ["lz4", "gzip", "none"])
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_every_codec_round_trips_exactly(tmp_path, image_dir, weights_file, compression, suffix):
    weights = weights_file("alexnet")
    common = dict(model_name="alexnet", model_path=weights, module_names=["features.3"],
                  in_path=image_dir, **FAST)
    extract(out_path=tmp_path / f"zstd{suffix}", **common)
    extract(out_path=tmp_path / f"{compression}{suffix}", compression=compression, **common)
    with open_store(tmp_path / f"zstd{suffix}") as a, open_store(tmp_path / f"{compression}{suffix}") as b:
        assert b.attrs["compression"] == compression
        assert np.array_equal(a["features.3"][:], b["features.3"][:])


def test_chunks_split_channels_only_for_large_layers(tmp_path, image_dir, weights_file):
    out = tmp_path / "c.zarr"
    extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["features.0", "classifier.4"],
            in_path=image_dir, out_path=out, chunk_images=8, **FAST)
    with open_store(out) as store:
        assert store["classifier.4"].chunks == (8, 4096)
        conv = store["features.0"].chunks
        assert conv[0] == 8 and conv[2:] == (55, 55) and conv[1] < 64
        assert 8 * conv[1] * 55 * 55 * 4 <= 2**20 and 64 % conv[1] == 0


def test_forward_pass_stops_after_the_last_requested_module(weights_file):
    model = torchvision.models.alexnet()
    ran = []
    model.classifier.register_forward_hook(lambda *a: ran.append("classifier"))
    outputs = Extractor(model, ["features.2"])(torch.zeros(2, 3, 224, 224))
    assert outputs["features.2"].shape == (2, 64, 27, 27)
    assert ran == []


class _Twice(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.shared(self.shared(x.mean(dim=(2, 3))[:, :1].repeat(1, 4))))


def test_a_module_that_runs_twice_is_refused():
    with pytest.raises(UserError, match="shared runs 2 times"):
        Extractor(_Twice(), ["shared"]).probe(torch.zeros(1, 3, 8, 8))


def test_a_module_returning_a_tuple_stores_element_0_or_the_part_named():
    model = torch.nn.Sequential()
    model.add_module("seq", torch.nn.Flatten(2))   # (N, 3 steps, 64)
    model.add_module("rnn", torch.nn.GRU(64, 4, batch_first=True))
    batch = torch.rand(2, 3, 8, 8)
    extractor = Extractor(model, ["rnn", "rnn[1]"])
    assert extractor.probe(batch) == {"rnn": (3, 4), "rnn[1]": (1, 4)}   # h_n is (layers, N, 4): image axis moved first
    outputs = extractor(batch)
    with torch.no_grad():
        output, h_n = model.rnn(model.seq(batch))
    assert torch.equal(outputs["rnn"], output) and torch.equal(outputs["rnn[1]"], h_n.transpose(0, 1))


def test_unknown_module_names_close_matches():
    with pytest.raises(UserError, match="did you mean features.1"):
        Extractor(torchvision.models.alexnet(), ["feature.1"])


def test_any_module_and_transform_through_the_python_api(tmp_path, image_dir):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(20, 3))
    transform = torchvision.transforms.Compose([torchvision.transforms.Resize((16, 16)),
                                                torchvision.transforms.ToTensor()])
    model = from_module(net, transform, name="tiny", input_size=(16, 16))
    out = tmp_path / "tiny.zarr"
    extract(model=model, module_names=["0", "4"], in_path=image_dir, out_path=out, **FAST)
    images = ImageSet.scan(image_dir)
    batch = torch.stack([transform(images.load(i)) for i in range(len(images))])
    with torch.no_grad():
        conv = net[0](batch)
        logits = net(batch)
    with open_store(out) as store:
        assert store.attrs["model_name"] == "tiny" and store.attrs["weights"] == "user-module"
        np.testing.assert_allclose(store["0"][:], conv.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(store["4"][:], logits.numpy(), rtol=1e-5, atol=1e-6)


def test_fraction_stores_only_the_subset(tmp_path, image_dir, weights_file):
    out = tmp_path / "frac.zarr"
    extract(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.6"],
            in_path=image_dir, out_path=out, fraction=0.5, rnd_seed=7, **FAST)
    with open_store(out) as store:
        expected = ImageSet.scan(image_dir, fraction=0.5, rnd_seed=7)
        assert list(store.file_names) == list(expected.file_names) and len(store) == 6
        assert store.targets.tolist() == list(expected.targets)
        assert store.attrs["fraction"] == 0.5 and store.attrs["rnd_seed"] == 7


def test_random_weights_warn_and_are_reproducible(tmp_path, image_dir):
    common = dict(model_name="alexnet", weights="none", module_names=["classifier.6"], in_path=image_dir, **FAST)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        extract(out_path=tmp_path / "a.zarr", **common)
    with pytest.warns(UserWarning):
        extract(out_path=tmp_path / "b.zarr", **common)
    with open_store(tmp_path / "a.zarr") as a, open_store(tmp_path / "b.zarr") as b:
        assert a.attrs["weights"] == "none"
        assert np.array_equal(a["classifier.6"][:], b["classifier.6"][:])


def test_amp_bfloat16_is_recorded_and_close_to_float32(tmp_path, image_dir, weights_file):
    weights = weights_file("alexnet")
    out = tmp_path / "amp.zarr"
    extract(model_name="alexnet", model_path=weights, module_names=["features.3", "classifier.4"],
            amp="bfloat16", in_path=image_dir, out_path=out, **FAST)
    with open_store(out) as store:
        validate_store(store)
        assert store.attrs["amp"] == "bfloat16" and store.attrs["fingerprint"]["amp"] == "bfloat16"
        assert store["features.3"].dtype == np.float32
        for layer in ("features.3", "classifier.4"):
            expected = reference_activations("alexnet", weights, image_dir, store.file_names, layer)
            stored = store[layer][:]
            assert not np.array_equal(stored, expected)                        # it did run in bfloat16
            assert np.abs(stored - expected).max() <= 0.05 * np.abs(expected).max()


def test_channels_last_gives_the_same_activations(tmp_path, image_dir, weights_file):
    weights = weights_file("resnet18")
    out = tmp_path / "cl.h5"
    extract(model_name="resnet18", model_path=weights, module_names=["layer1.0.conv1", "fc"],
            channels_last=True, in_path=image_dir, out_path=out, **FAST)
    with open_store(out) as store:
        assert store.attrs["fingerprint"]["channels_last"] is True
        assert_equals_reference(store, "resnet18", weights, image_dir, ["layer1.0.conv1", "fc"], rtol=1e-4)


def test_unknown_amp_is_refused(tmp_path, image_dir):
    with pytest.raises(UserError, match="unknown --amp 'int8'"):
        extract(model_name="alexnet", weights="none", module_names=["fc"], amp="int8",
                in_path=image_dir, out_path=tmp_path / "x.zarr", **FAST)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_torchvision_decoder_matches_pillow_closely_and_is_recorded(tmp_path, image_dir, weights_file, suffix):
    weights = weights_file("alexnet")
    out = tmp_path / f"tv{suffix}"
    extract(model_name="alexnet", model_path=weights, module_names=["features.2", "classifier.6"],
            decoder="torchvision", in_path=image_dir, out_path=out, **{**FAST, "num_workers": 1})
    with open_store(out) as store:
        assert store.attrs["fingerprint"]["decoder"] == "torchvision" and store.complete
        for layer in ("features.2", "classifier.6"):
            expected = reference_activations("alexnet", weights, image_dir, store.file_names, layer)
            stored = store[layer][:]
            # Same images through another decoder and tensor resizing: close, not equal.
            assert np.abs(stored - expected).mean() <= 0.05 * np.abs(expected).mean()


def test_decode_workers_and_codec_threads_follow_the_granted_cores(monkeypatch):
    import os

    from actstore import config
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)   # a 4-core job
    assert config.usable_cores() == 4
    assert config.num_workers("cpu") == 2
    assert config.num_workers("cuda") == 2        # 2 decode, 2 compress
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert config.num_workers("cuda") == 8
    assert config.num_workers("cpu") == 2


def test_torchvision_decoder_takes_every_format_and_falls_back_to_pillow(tmp_path, weights_file, monkeypatch):
    # BMP, TIFF and an animated GIF are decoded by Pillow in the workers; a JPEG
    # that the device decoder refuses (here: every JPEG) is decoded by Pillow
    # in the main process. Every row then equals the Pillow decoder's.
    import torchvision.io
    from PIL import Image

    rng = np.random.default_rng(3)
    root = tmp_path / "images"
    root.mkdir()
    frames = [Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(root / "a.bmp")
    frames[1].save(root / "b.tif")
    frames[0].save(root / "c.gif", save_all=True, append_images=frames[1:])
    frames[2].convert("CMYK").save(root / "d.jpg", quality=95)

    def refuse(*args, **kwargs):
        raise RuntimeError("not supported by this decoder")
    monkeypatch.setattr(torchvision.io, "decode_jpeg", refuse)
    weights = weights_file("alexnet")
    stores = {}
    for decoder in ("torchvision", "pil"):
        stores[decoder] = tmp_path / f"{decoder}.zarr"
        extract(model_name="alexnet", model_path=weights, module_names=["classifier.6"], decoder=decoder,
                in_path=root, out_path=stores[decoder], **{**FAST, "num_workers": 1})
    with open_store(stores["torchvision"]) as tv, open_store(stores["pil"]) as pil:
        assert list(tv.file_names) == list(pil.file_names) == ["a.bmp", "b.tif", "c.gif", "d.jpg"]
        assert tv.complete
        # Same pixels; only the transform differs (tensor vs PIL resizing): close, not equal.
        assert np.abs(tv["classifier.6"][:] - pil["classifier.6"][:]).max() <= \
            0.05 * np.abs(pil["classifier.6"][:]).max()


def test_codec_threads_leave_the_decode_workers_their_cores(monkeypatch):
    import os

    from actstore import config
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert config.codec_threads("cpu", 2) == 16
    assert config.codec_threads("cuda", 8) == 7      # 8 decode workers, the main thread, 7 codec threads
    assert config.codec_threads("cuda", 14) == 2     # never fewer than 2
