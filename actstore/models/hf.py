"""Hugging Face transformers vision models (``--source hf``).

By hub id (``facebook/dinov2-small``; ``--weights`` is a revision, ``DEFAULT``
the main branch) through the hub's cache, or from a local ``save_pretrained``
folder (``--model-path DIR``, alone), which is how offline clusters hold them.
Weights load from safetensors (or ``torch.load(weights_only=True)``), and no
code from the hub is ever run. The model class is the Auto class's, except
for CLIP and SigLIP, whose image tower alone is built
(``CLIPVisionModelWithProjection``, ``SiglipVisionModel``). Preprocessing is
the model's own image processor.

The pooled ``embedding`` is the model output's ``image_embeds`` (CLIP) or
``pooler_output`` (DINOv2's and CLIP's normalised CLS token, ViT's pooler,
SigLIP's attention pool, ConvNeXt's pooled features).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import WeightsError
from ._common import Model, Tap, download_guard, file_sha256, input_size_of, json_repr, require

WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Families whose checkpoints hold an image and a text tower: only the image tower is built.
IMAGE_TOWERS = {"clip": "CLIPVisionModelWithProjection", "clip_vision_model": "CLIPVisionModelWithProjection",
                "siglip": "SiglipVisionModel", "siglip_vision_model": "SiglipVisionModel",
                "siglip2": "Siglip2VisionModel", "siglip2_vision_model": "Siglip2VisionModel"}


class ImageProcessorTransform:
    """A Hugging Face image processor as a transform: PIL image in, (3, H, W) tensor out.
    Its repr is the processor's class and full settings, so that a changed
    resize or normalisation changes the store's fingerprint."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return json_repr(type(self.processor).__name__, self.processor.to_dict())


def available_models() -> list[str]:
    """The models in the local Hugging Face cache (the hub itself cannot be listed offline)."""
    require("transformers", "hf")
    from huggingface_hub import scan_cache_dir
    try:
        return sorted(repo.repo_id for repo in scan_cache_dir().repos if repo.repo_type == "model")
    except Exception:   # no cache folder yet
        return []


def load(model_name: str | None, *, weights: str | None, model_path: Path | None, seed: int | None) -> Model:
    """See :func:`actstore.models.load_model`."""
    transformers = require("transformers", "hf")
    random_init = weights is not None and str(weights).lower() == "none"
    revision = (None if random_init or model_path is not None or not weights or str(weights).upper() == "DEFAULT"
                else str(weights))
    sha = None
    if model_path is not None:
        if not (model_path / "config.json").is_file():
            raise WeightsError(f"--model-path {model_path} has no config.json: give a folder written by "
                            "save_pretrained (config.json, model.safetensors, preprocessor_config.json)")
        files = sorted(p for p in model_path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if not files and not random_init:
            raise WeightsError(f"--model-path {model_path} holds no weights (model.safetensors)")
        source, name = str(model_path), model_name or model_path.name
        sha = file_sha256(*files) if files and not random_init else None
    else:
        source, name = str(model_name), str(model_name)
    options = {"revision": revision, "trust_remote_code": False}
    transformers.logging.set_verbosity_error()   # load reports and progress bars would bury our one line
    transformers.logging.disable_progress_bar()
    with download_guard(f"the Hugging Face model {source}"):
        config = transformers.AutoConfig.from_pretrained(source, **options)
        tower = IMAGE_TOWERS.get(config.model_type)
        cls = getattr(transformers, tower) if tower else transformers.AutoModel
        torch.manual_seed(0 if seed is None else seed)
        if random_init:
            warnings.warn(f"{name} has RANDOM weights (--weights none): activations "
                          "are not those of a trained network", stacklevel=3)
            module = cls.from_config(_tower_config(config) if tower else config)
        else:
            module, info = cls.from_pretrained(source, config=_tower_config(config) if tower else config,
                                               output_loading_info=True, **options)
            missing = list(info.get("missing_keys") or [])
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(source, **options)
        except OSError as error:
            raise WeightsError(f"{source} has no image processor (preprocessor_config.json): save the "
                            "model's processor with processor.save_pretrained(folder)") from error
    module.eval()
    if random_init:
        weights_id = "none"
    elif model_path is not None:
        weights_id = f"folder@{model_path.name}"
    else:
        weights_id = getattr(config, "_commit_hash", None) or revision or "main"
    embedding = Tap("", "image_embeds" if tower == "CLIPVisionModelWithProjection" else "pooler_output")
    if not random_init and missing:
        # A pooler the checkpoint lacks (a ViT saved from ViTForImageClassification)
        # would be random: no embedding then. Any other missing weight refuses the model.
        if any(not key.startswith("pooler.") for key in missing):
            more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
            raise WeightsError(f"the weights of {source} do not fit {type(module).__name__}: missing keys: "
                            f"{', '.join(missing[:5])}{more}")
        warnings.warn(f"{name} was saved without its pooler, so it has no `embedding`: name a module "
                      "(e.g. layernorm) instead", stacklevel=3)
        embedding = None
    transform = ImageProcessorTransform(processor)
    return Model(module=module, transform=transform, name=name, weights=weights_id, weights_sha256=sha,
                 input_size=input_size_of(transform), source="hf", embedding=embedding)


def _tower_config(config):
    """The image tower's config from a two-tower config (CLIP keeps its projection size)."""
    vision = getattr(config, "vision_config", None)
    if vision is None:
        return config
    if hasattr(config, "projection_dim"):
        vision.projection_dim = config.projection_dim
    return vision
