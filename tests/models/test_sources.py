"""timm, OpenCLIP and Hugging Face models: tiny random-initialised models saved
the way users hold them, extracted through the real command line, equal the
family's own intermediate-layer API on the same preprocessed inputs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import child_env, make_images
from PIL import Image
from typer.testing import CliRunner

from actstore import extract, open_store
from actstore.capture import Extractor
from actstore.cli import app
from actstore.errors import UserError
from actstore.models import Tap, from_module, load_model
from actstore.models.outputs import parse_layer
from actstore.store.metadata.schema import validate_store

timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")
from safetensors.torch import save_file  # noqa: E402  (after the skips: a dependency of all three)

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
RTOL, ATOL = 1e-4, 1e-5   # float32: the store ran other batch sizes than the reference
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}


def invoke(*args):
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


def fails(*args) -> str:
    """The one error line of a command that must fail."""
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def pixels(store, transform) -> torch.Tensor:
    """The store's images, preprocessed by the family's own transform."""
    root = Path(store.attrs["in_path"])
    images = []
    for name in store.file_names:
        with Image.open(root / name) as image:
            images.append(transform(image.convert("RGB")))
    return torch.stack(images)


def assert_close(stored: np.ndarray, expected: torch.Tensor) -> None:
    assert stored.shape == tuple(expected.shape)
    np.testing.assert_allclose(stored, expected.numpy(), rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("src") / "in", "classes", per_class=2)   # 6 images


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """Each family's model as a user holds it, random weights (seeded)."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(1)
    paths = {"vit": folder / "vit_tiny.safetensors", "convnext": folder / "convnext_atto.pth"}
    save_file(timm.create_model("vit_tiny_patch16_224").state_dict(), paths["vit"])
    torch.save(timm.create_model("convnext_atto").state_dict(), paths["convnext"])

    paths["dinov2"] = folder / "dinov2-tiny"
    transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
        patch_size=8)).save_pretrained(paths["dinov2"])
    transformers.BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                                   image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
                                   ).save_pretrained(paths["dinov2"])

    paths["clip"] = folder / "clip-tiny"
    transformers.CLIPModel(transformers.CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=64, max_position_embeddings=8, bos_token_id=0, eos_token_id=1),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8),
        projection_dim=16)).save_pretrained(paths["clip"])
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                                    ).save_pretrained(paths["clip"])

    paths["open_clip"] = folder / "open-clip-tiny"   # as the hub holds OpenCLIP models
    paths["open_clip"].mkdir()
    (paths["open_clip"] / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    clip = open_clip.model.CLIP(**TINY_CLIP)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()},
              paths["open_clip"] / "open_clip_model.safetensors")
    return paths


def run_cli(tmp_path, images, suffix, *args) -> Path:
    out = tmp_path / f"store{suffix}"
    invoke("extract", "--in-path", images, "--out-path", out, "--batch-size", "4", "--num-workers", "0",
           "-q", *args)
    with open_store(out) as store:
        validate_store(store)
    return out


# --------------------------------------------------------------------------- each family equals its own API

@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_timm_vit_blocks_equal_forward_intermediates(tmp_path, images, saved, suffix):
    out = run_cli(tmp_path, images, suffix, "--source", "timm", "--model-name", "vit_tiny_patch16_224",
                  "--model-path", saved["vit"], "--module-name", "blocks.1", "--module-name", "embedding")
    from safetensors.torch import load_file
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    vit.load_state_dict(load_file(saved["vit"]))
    vit.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=vit))
    with open_store(out) as store:
        x = pixels(store, transform)
        with torch.no_grad():
            spatial, prefix = vit.forward_intermediates(x, indices=[1], norm=False, output_fmt="NLC",
                                                        return_prefix_tokens=True, intermediates_only=True)[0]
            pooled = vit.forward_head(vit.forward_features(x), pre_logits=True)
        assert_close(store["blocks.1"][:], torch.cat([prefix, spatial], dim=1))   # (6, 197, 192)
        assert_close(store["embedding"][:], pooled)                                # (6, 192)
        assert store.spec("blocks.1").dims == ("image", "token", "channel")
        assert store.attrs["source"] == "timm" and store.attrs["weights"] == "file@vit_tiny.safetensors"
        assert store.attrs["preprocessing"].startswith("Compose(Resize(size=248, interpolation=bicubic")
        assert "Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])" in store.attrs["preprocessing"]


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_timm_convnext_stages_equal_forward_intermediates(tmp_path, images, saved, suffix):
    out = run_cli(tmp_path, images, suffix, "--source", "timm", "--model-name", "convnext_atto",
                  "--model-path", saved["convnext"], "--module-name", "stages.1", "--module-name", "stages.3")
    convnext = timm.create_model("convnext_atto", pretrained=False)
    convnext.load_state_dict(torch.load(saved["convnext"], weights_only=True))
    convnext.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=convnext))
    with open_store(out) as store:
        x = pixels(store, transform)
        with torch.no_grad():
            stage1, stage3 = convnext.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        assert_close(store["stages.1"][:], stage1)   # (6, 80, 28, 28)
        assert_close(store["stages.3"][:], stage3)   # (6, 320, 7, 7)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_channels_last_block_is_stored_channels_first(tmp_path, images, suffix):
    """ConvNeXt's block MLP runs on (N, H, W, C); stored (N, C, H, W), named and
    chunked as every other feature map, and marked in the layer attributes."""
    layer = "stages.0.blocks.0.mlp"
    torch.manual_seed(2)
    convnext = timm.create_model("test_convnext").eval()    # ConvNeXt with the MLP on channels last
    torch.save(convnext.state_dict(), tmp_path / "convnext.pth")
    out = run_cli(tmp_path, images, suffix, "--source", "timm", "--model-name", "test_convnext",
                  "--model-path", tmp_path / "convnext.pth", "--module-name", layer, "--module-name", "stages.0",
                  "--chunk-channels", "8")
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=convnext))
    captured = []
    dict(convnext.named_modules())[layer].register_forward_hook(lambda m, i, o: captured.append(o))
    with open_store(out) as store:
        with torch.no_grad():
            convnext(pixels(store, transform))
        assert captured[0].shape == (6, 40, 40, 24)                    # what the module returns
        assert_close(store[layer][:], captured[0].permute(0, 3, 1, 2))  # (6, 24, 40, 40)
        spec = store.spec(layer)
        assert spec.dims == ("image", "channel", "height", "width") and spec.module_layout == "NHWC"
        assert spec.chunks[1:] == (8, 40, 40)                           # split along channels, as asked
        assert store.spec("stages.0").module_layout is None             # channels first already


def test_torchvision_swin_stages_are_stored_channels_first(tmp_path, image_dir, weights_file):
    from conftest import reference_activations

    from actstore import extract
    weights = weights_file("swin_t")
    result = extract(model_name="swin_t", model_path=weights, module_names=["features.1", "avgpool"],
                     in_path=image_dir, out_path=tmp_path / "swin.zarr", batch_size=4, num_workers=0, quiet=True)
    with open_store(result.path) as store:
        expected = reference_activations("swin_t", weights, image_dir, store.file_names, "features.1")
        assert expected.shape == (12, 56, 56, 96)
        np.testing.assert_allclose(store["features.1"][:], expected.transpose(0, 3, 1, 2), rtol=RTOL, atol=ATOL)
        assert store.summary()["layers"]["features.1"]["dims"] == ["image", "channel", "height", "width"]
        assert store.spec("avgpool").module_layout is None and store["avgpool"].shape == (12, 768, 1, 1)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_hf_dinov2_folder_alone_equals_output_hidden_states(tmp_path, images, saved, suffix):
    out = run_cli(tmp_path, images, suffix, "--source", "hf", "--model-path", saved["dinov2"],
                  "--module-name", "encoder.layer.0", "--module-name", "encoder.layer.1",
                  "--module-name", "embedding", "--module-name", "encoder.layer.1.attention[0]")
    model = transformers.AutoModel.from_pretrained(saved["dinov2"]).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(saved["dinov2"])
    with open_store(out) as store:
        x = pixels(store, lambda im: processor(images=im, return_tensors="pt")["pixel_values"][0])
        with torch.no_grad():
            result = model(pixel_values=x, output_hidden_states=True)
        assert_close(store["encoder.layer.0"][:], result.hidden_states[1])   # (6, 17, 32)
        assert_close(store["encoder.layer.1"][:], result.hidden_states[2])
        assert_close(store["embedding"][:], result.pooler_output)            # the normalised CLS token
        assert store["encoder.layer.1.attention[0]"].shape == (6, 17, 32)
        assert store.attrs["model_name"] == "dinov2-tiny" and store.attrs["weights"] == "folder@dinov2-tiny"
        assert store.attrs["preprocessing"].startswith('BitImageProcessor({"crop_size": {"height": 32')


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_hf_clip_vision_tower_equals_output_hidden_states_and_image_features(tmp_path, images, saved, suffix):
    out = run_cli(tmp_path, images, suffix, "--source", "hf", "--model-path", saved["clip"],
                  "--module-name", "vision_model.encoder.layers.1", "--module-name", "embedding",
                  "--module-name", "vision_model[pooler_output]")
    clip = transformers.CLIPModel.from_pretrained(saved["clip"]).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(saved["clip"])
    with open_store(out) as store:
        x = pixels(store, lambda im: processor(images=im, return_tensors="pt")["pixel_values"][0])
        with torch.no_grad():
            vision = clip.vision_model(pixel_values=x, output_hidden_states=True)
            features = clip.get_image_features(pixel_values=x)
        features = features if isinstance(features, torch.Tensor) else features.pooler_output
        assert_close(store["vision_model.encoder.layers.1"][:], vision.hidden_states[2])   # (6, 17, 32)
        assert_close(store["vision_model[pooler_output]"][:], vision.pooler_output)        # (6, 32)
        assert_close(store["embedding"][:], features)                                       # (6, 16)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_open_clip_folder_equals_forward_intermediates_and_encode_image(tmp_path, images, saved, suffix):
    out = run_cli(tmp_path, images, suffix, "--source", "open_clip", "--model-path", saved["open_clip"],
                  "--module-name", "visual.transformer.resblocks.1", "--module-name", "embedding")
    clip, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{saved['open_clip']}")
    clip.eval()
    with open_store(out) as store:
        x = pixels(store, preprocess)
        with torch.no_grad():
            inter = clip.visual.forward_intermediates(x, indices=[1], intermediates_only=True,
                                                      output_extra_tokens=True)
            embedding = clip.encode_image(x)
        spatial = inter["image_intermediates"][0].flatten(2).transpose(1, 2)     # NCHW -> tokens
        tokens = torch.cat([inter["image_intermediates_prefix"][0], spatial], dim=1)
        assert_close(store["visual.transformer.resblocks.1"][:], tokens)   # (6, 17, 32)
        assert_close(store["embedding"][:], embedding)                      # (6, 16)
        assert "0x" not in store.attrs["preprocessing"]   # functions by name, not by address


def test_open_clip_checkpoint_file_for_a_named_model(tmp_path, monkeypatch):
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(3)
    clip = open_clip.model.CLIP(**TINY_CLIP).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, tmp_path / "ckpt.pt")
    model = load_model("tiny-clip", source="open_clip", model_path=tmp_path / "ckpt.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.module(x), clip.encode_image(x))
    assert model.weights == "file@ckpt.pt" and model.embedding == Tap("visual")


# --------------------------------------------------------------------------- outputs that are not one tensor

class _SequenceFirst(torch.nn.Module):
    """Patches -> tokens, then attention run sequence-first (tokens, images, dim),
    as nn.MultiheadAttention does by default; it returns (output, weights)."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 8, 8, stride=8)
        self.attn = torch.nn.MultiheadAttention(8, 2)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).permute(2, 0, 1)       # (16 tokens, N, 8)
        out, weights = self.attn(tokens, tokens, tokens)
        return out.mean(0)


def test_a_tuple_block_and_a_sequence_first_block_store_images_first(tmp_path, images):
    torch.manual_seed(0)
    net = _SequenceFirst().eval()
    transform = lambda im: torch.from_numpy(np.asarray(im.resize((32, 32)), dtype=np.float32) / 255).permute(2, 0, 1)  # noqa: E731
    model = from_module(net, transform, name="seqfirst", input_size=(32, 32), embedding="attn[0]")
    extract(model=model, in_path=images, out_path=tmp_path / "s.zarr", batch_size=4, num_workers=0, quiet=True,
            module_names=["attn", "attn[1]", "embedding"])
    with open_store(tmp_path / "s.zarr") as store:
        x = pixels(store, transform)
        with torch.no_grad():
            tokens = net.patch(x).flatten(2).permute(2, 0, 1)
            out, weights = net.attn(tokens, tokens, tokens)
        assert_close(store["attn"][:], out.transpose(0, 1))     # (6, 16, 8): images first
        assert_close(store["attn[1]"][:], weights)              # (6, 16, 16): already images first
        assert_close(store["embedding"][:], out.transpose(0, 1))
        assert store.spec("attn").dims == ("image", "token", "channel")


class _NoneFirst(torch.nn.Module):
    def forward(self, x):
        return None, x


def test_a_tuple_whose_first_element_is_not_a_tensor_needs_a_part():
    net = torch.nn.Sequential()
    net.add_module("block", _NoneFirst())
    with pytest.raises(UserError, match=r"block returns a tuple whose first element is a NoneType: "
                                        r"name the part to store, one of block\[0\], block\[1\]"):
        Extractor(net, ["block"]).probe(torch.zeros(1, 3, 4, 4))
    assert Extractor(net, ["block[1]"]).probe(torch.zeros(1, 3, 4, 4)) == {"block[1]": (3, 4, 4)}


def test_layer_names_with_parts_parse_to_index_or_key():
    assert parse_layer("blocks.5.attn[1]") == Tap("blocks.5.attn", 1)
    assert parse_layer("vision_model[pooler_output]") == Tap("vision_model", "pooler_output")
    assert parse_layer("[image_embeds]") == Tap("", "image_embeds")
    with pytest.raises(UserError, match="is not MODULE or MODULE\\[PART\\]"):
        parse_layer("blocks[1][2]")


def test_parts_that_do_not_exist_give_one_line(tmp_path, images, saved):
    error = fails("extract", "--source", "hf", "--model-path", saved["dinov2"], "--in-path", images,
                  "--out-path", tmp_path / "x.zarr", "--module-name", "encoder.layer.1.attention[1]")
    assert "encoder.layer.1.attention[1] is a NoneType, not a tensor: use one of" in error
    error = fails("extract", "--source", "hf", "--model-path", saved["dinov2"], "--in-path", images,
                  "--out-path", tmp_path / "x.zarr", "--module-name", "encoder[hidden]")
    assert "has no part 'hidden'; use one of encoder[last_hidden_state]" in error
    error = fails("extract", "--source", "hf", "--model-path", saved["dinov2"], "--in-path", images,
                  "--out-path", tmp_path / "x.zarr", "--module-name", "encoder.layer.9")
    assert "unknown module 'encoder.layer.9'; did you mean encoder.layer.1, encoder.layer.0" in error
    assert not (tmp_path / "x.zarr").exists()


# --------------------------------------------------------------------------- a token layer through everything else

VIT = ("--source", "timm", "--model-name", "vit_tiny_patch16_224")


def test_token_layer_resumes_to_the_uninterrupted_store(tmp_path, images, saved):
    args = ["extract", "--source", "hf", "--model-path", str(saved["dinov2"]), "--module-name", "encoder.layer.0",
            "--in-path", str(images), "--batch-size", "2", "--chunk-images", "2", "--num-workers", "0", "-q"]
    invoke(*args, "--out-path", tmp_path / "whole.zarr")
    invoke(*args, "--out-path", tmp_path / "cut.zarr")
    import zarr
    root = zarr.open_group(str(tmp_path / "cut.zarr"), mode="r+")
    root["written"][2:] = 0                  # as a run killed after the first chunk leaves it
    root["activations/encoder.layer.0"][2:] = 0
    root.attrs["status"] = "incomplete"
    result = invoke(*args, "--out-path", tmp_path / "cut.zarr")
    assert "resumed 4 rows" in result.output
    with open_store(tmp_path / "cut.zarr") as cut, open_store(tmp_path / "whole.zarr") as ref:
        assert cut.status == "complete" and cut["encoder.layer.0"].shape == (6, 17, 32)
        assert np.array_equal(cut["encoder.layer.0"][:], ref["encoder.layer.0"][:])


@pytest.mark.slow   # two processes, each importing torch and transformers
def test_token_layer_shards_equal_a_single_run(tmp_path, images, saved):
    args = ["extract", "--source", "hf", "--model-path", str(saved["dinov2"]), "--module-name", "encoder.layer.1",
            "--in-path", str(images), "--batch-size", "2", "--chunk-images", "2", "--num-workers", "0", "-q"]
    invoke(*args, "--out-path", tmp_path / "single.zarr")
    procs = [subprocess.Popen([sys.executable, "-m", "actstore", *args, "--out-path", str(tmp_path / "sharded.zarr"),
                               "--shard", f"{i}/2"], cwd=ROOT, env=child_env(), stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    with open_store(tmp_path / "sharded.zarr") as sharded, open_store(tmp_path / "single.zarr") as single:
        assert sharded.status == "complete" and sharded["encoder.layer.1"].shape == (6, 17, 32)
        assert np.array_equal(sharded["encoder.layer.1"][:], single["encoder.layer.1"][:])


def test_token_layer_flattened_dry_run_info_verify_xarray_and_text_export(tmp_path, images, saved):
    common = ["--source", "hf", "--model-path", saved["dinov2"], "--in-path", images, "--num-workers", "0", "-q"]
    plan = invoke("extract", *common, "--out-path", tmp_path / "s.zarr", "--module-name", "encoder.layer.1",
                  "--dry-run").output
    assert "encoder.layer.1  17x32" in plan and not (tmp_path / "s.zarr").exists()
    invoke("extract", *common, "--out-path", tmp_path / "s.zarr", "--module-name", "encoder.layer.1")
    invoke("extract", *common, "--out-path", tmp_path / "flat.h5", "--module-name", "encoder.layer.1",
           "--flatten-acts")
    with open_store(tmp_path / "s.zarr") as store, open_store(tmp_path / "flat.h5") as flat:
        tokens = store["encoder.layer.1"][:]
        assert flat["encoder.layer.1"].shape == (6, 17 * 32) and flat.spec("encoder.layer.1").native_shape == (17, 32)
        assert np.array_equal(flat["encoder.layer.1"][:], tokens.reshape(6, -1))
        array = store.to_xarray("encoder.layer.1")
        assert array.dims == ("image", "token", "channel")
        assert np.array_equal(array.values, tokens)
    info = invoke("info", tmp_path / "s.zarr").output
    assert "encoder.layer.1: (6, 17, 32) (image, token, channel)" in info
    checked = invoke("verify", tmp_path / "s.zarr", "--recompute", "3", "--model-path", saved["dinov2"]).output
    assert "ok   recompute: 3 images recomputed" in checked
    invoke("export", tmp_path / "s.zarr", "--module-name", "encoder.layer.1", "--out-path", tmp_path / "txt",
           "--decimals", "8")
    from actstore.legacy import slices2tensor
    text = slices2tensor(tmp_path / "txt" / "dinov2-tiny" / "encoder.layer.1", "activations.txt")
    assert text.shape == (6, 17, 32)
    np.testing.assert_allclose(text, tokens, atol=1e-8)


def test_a_changed_preprocessing_refuses_to_resume(tmp_path, images, saved):
    import shutil
    folder = tmp_path / "dino"
    shutil.copytree(saved["dinov2"], folder)
    args = ["extract", "--source", "hf", "--model-path", folder, "--in-path", images, "--num-workers", "0",
            "-q", "--out-path", tmp_path / "s.zarr", "--module-name", "encoder.layer.0"]
    invoke(*args)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config["image_mean"] = [0.5, 0.456, 0.406]
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    assert "preprocessing (store: " in fails(*args)


# --------------------------------------------------------------------------- listing, layers, weights, errors

def test_layers_shows_token_shapes_and_tuple_parts(saved):
    vit = invoke("layers", *VIT[:2], "vit_tiny_patch16_224").output
    assert any(line.split()[:3] == ["blocks.5", "Block", "197x192"] for line in vit.splitlines())
    assert vit.splitlines()[1].split()[:2] == ["embedding", "pooled"]
    dino = invoke("layers", "--source", "hf", "--model-path", saved["dinov2"]).output
    assert "encoder.layer.0.attention[0] 17x32  encoder.layer.0.attention[1] (not a tensor)" in dino
    assert "encoder[last_hidden_state] 17x32" in dino


def test_models_lists_a_family_by_pattern():
    listed = invoke("models", "--source", "timm", "vit_tiny*").output.split()
    assert "vit_tiny_patch16_224" in listed and all(n.startswith("vit_tiny") for n in listed)
    assert "ViT-B-32" in invoke("models", "--source", "open_clip", "ViT-B-32").output


def test_random_init_is_seeded_and_warned():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        a = load_model("convnext_atto", source="timm", weights="none", seed=5)
    b = load_model("convnext_atto", source="timm", weights="none", seed=5)
    assert torch.equal(a.module.stem[0].weight, b.module.stem[0].weight) and a.weights == "none"


def test_open_clip_needs_a_named_tag():
    with pytest.raises(UserError, match="OpenCLIP ViT-B-32 needs --weights naming a pretrained tag: use one of openai"):
        load_model("ViT-B-32", source="open_clip")


OFFLINE = """
import warnings
from actstore.errors import UserError
from actstore.models import load_model
for source, name, weights in [("hf", "facebook/dinov2-small", "DEFAULT"), ("timm", "vit_tiny_patch16_224", "DEFAULT"),
                              ("open_clip", "ViT-B-32", "openai"), ("hf", "facebook/dinov2-small", "none")]:
    try:
        load_model(name, source=source, weights=weights)
        print("loaded", source)
    except UserError as error:
        print(error)
"""


def test_an_unreachable_hub_fails_at_once_naming_model_path(tmp_path):
    """Nothing listens on port 9: the hub is probed, found unreachable and put
    in offline mode, instead of retrying for a minute."""
    done = subprocess.run([sys.executable, "-c", OFFLINE], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=child_env(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"),
                                        TORCH_HOME=str(tmp_path / "torch")))
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and done.stderr == "", done.stdout + done.stderr
    assert all(line.startswith("could not load ") and "pass --model-path with a local copy" in line
               for line in lines), lines
    assert "the Hugging Face model facebook/dinov2-small" in lines[0] and "OpenCLIP weights for ViT-B-32" in lines[2]


def test_an_offline_download_fails_in_one_line_on_the_command_line(tmp_path, images):
    done = subprocess.run([sys.executable, "-m", "actstore", "extract", "--source", "hf", "--model-name",
                           "facebook/dinov2-small", "--module-name", "x", "--in-path", str(images),
                           "--out-path", str(tmp_path / "x.zarr")], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=child_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf")))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "--model-path" in done.stderr, done.stderr


def test_a_pickle_carrying_code_is_refused_for_timm(tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"head.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="is not a plain state dict of tensors; refused"):
        load_model("convnext_atto", source="timm", model_path=tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_a_missing_package_names_the_extra(monkeypatch):
    import importlib
    real = importlib.import_module

    def without_timm(name, *args):
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_timm)
    with pytest.raises(UserError, match=r"pip install 'actstore\[timm\]'"):
        load_model("convnext_atto", source="timm", weights="none")


def test_unknown_source_and_model_give_one_line(tmp_path, images):
    assert "unknown --source 'tim'; did you mean timm?" in fails(
        "extract", "--source", "tim", "--model-name", "x", "--module-name", "x", "--in-path", images,
        "--out-path", tmp_path / "x.zarr")
    assert "unknown timm model 'vit_tiny_patch16_22'; did you mean vit_tiny_patch16_224" in fails(
        "layers", "--source", "timm", "vit_tiny_patch16_22")


def test_a_hf_checkpoint_saved_without_its_pooler_has_no_embedding(tmp_path):
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, image_size=32, patch_size=8)
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    with pytest.warns(UserWarning, match="saved without its pooler, so it has no `embedding`"):
        model = load_model(None, source="hf", model_path=tmp_path / "vit")
    with pytest.raises(UserError, match="this model has no pooled embedding: name a module"):
        Extractor(model, ["embedding"])
    assert Extractor(model, ["layernorm"]).probe(torch.zeros(1, 3, 32, 32)) == {"layernorm": (17, 32)}
