"""Models by name, weights from disk, refusal of bad weights, the module tree."""
import hashlib
import os
import pickle

import pytest
import torch

from actstore.errors import UserError
from actstore.models import ORIGINAL_MODELS, available_models, load_model, module_tree


def test_every_original_model_is_available():
    assert set(ORIGINAL_MODELS) <= set(available_models())
    assert "vit_b_16" in available_models() and len(available_models()) >= 70


@pytest.mark.parametrize("name", ORIGINAL_MODELS)
def test_original_models_build_with_their_default_preprocessing(name):
    model = load_model(name, weights="none")
    assert model.input_size == (224, 224)
    assert "crop_size=[224]" in model.preprocessing
    assert not model.module.training


def test_state_dict_file_loads_and_is_hashed(weights_file):
    path = weights_file("alexnet")
    model = load_model("alexnet", model_path=path)
    expected = torch.load(path, weights_only=True)
    assert torch.equal(model.module.features[0].weight, expected["features.0.weight"])
    assert model.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.weights == "file@alexnet.pth"                          # what the weights are
    assert model.preprocessing_weights == "AlexNet_Weights.IMAGENET1K_V1"  # whose transforms preprocess


def test_checkpoint_folder_finds_torchvisions_file_name(tmp_path, weights_file):
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "alexnet-owt-7be5be79.pth").write_bytes(weights_file("alexnet").read_bytes())
    for given in (folder, tmp_path):
        model = load_model("alexnet", model_path=given)
        assert model.weights == "file@alexnet-owt-7be5be79.pth"


def test_checkpoint_folder_without_the_file_names_it(tmp_path):
    with pytest.raises(UserError, match="has no alexnet-owt-7be5be79.pth"):
        load_model("alexnet", model_path=tmp_path)


def test_state_dict_of_another_model_names_the_keys(weights_file):
    with pytest.raises(UserError, match=r"does not fit AlexNet: missing keys: features\.0\.weight.*unexpected keys: conv1\.weight"):
        load_model("alexnet", model_path=weights_file("resnet18"))


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['ACTSTORE_TEST_MARKER']}",))


def test_a_pickle_carrying_code_is_refused_without_running_it(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("ACTSTORE_TEST_MARKER", str(marker))
    bad = tmp_path / "evil.pth"
    with bad.open("wb") as handle:
        pickle.dump({"features.0.weight": _Payload()}, handle)
    with pytest.raises(UserError, match="not a plain state dict of tensors; refused without running it"):
        load_model("alexnet", model_path=bad)
    assert not marker.exists()


def test_unknown_model_and_weights_suggest_close_names():
    with pytest.raises(UserError, match="did you mean alexnet"):
        load_model("alexnett")
    with pytest.raises(UserError, match="unknown weights for alexnet 'IMAGENET1K_V9'"):
        load_model("alexnet", weights="IMAGENET1K_V9")


def test_download_fails_with_a_clear_message_when_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))   # empty cache: forces a download
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("Name or service not known")))
    with pytest.raises(UserError, match="could not download AlexNet_Weights.IMAGENET1K_V1 .*--model-path"):
        load_model("alexnet")


def test_named_weights_pick_their_own_preprocessing_also_from_disk(weights_file):
    path = weights_file("resnet50")
    default = load_model("resnet50", model_path=path)
    v1 = load_model("resnet50", weights="IMAGENET1K_V1", model_path=path)
    assert "resize_size=[232]" in default.preprocessing   # DEFAULT is IMAGENET1K_V2
    assert "resize_size=[256]" in v1.preprocessing
    assert (v1.weights, v1.preprocessing_weights) == ("file@resnet50.pth", "ResNet50_Weights.IMAGENET1K_V1")
    assert default.preprocessing_weights == "ResNet50_Weights.IMAGENET1K_V2"


def test_module_tree_has_shapes_per_image():
    tree = {m.name: m for m in module_tree(load_model("alexnet", weights="none"))}
    assert tree["features.0"].shape == (64, 55, 55)
    assert tree["features.0"].bytes_per_image() == 64 * 55 * 55 * 4 == 774400
    assert tree["classifier.4"].shape == (4096,)
    assert tree["features.0"].type == "Conv2d" and tree["features.0"].calls == 1
