"""OpenCLIP image towers by name (``--source open_clip``).

Weights: a pretrained tag (``--weights openai``, ``laion2b_s34b_b79k``;
OpenCLIP has no default, so one must be named) from OpenCLIP's cache or
download; a checkpoint file (``--model-path``) for a built-in model name; or
a local model folder holding ``open_clip_config.json`` and the weights (as
the hub stores OpenCLIP models), where the name may be left out. Checkpoints
load with ``weights_only=True`` or from safetensors. Preprocessing is the
evaluation transform ``create_model_and_transforms`` returns for those weights.

Only the image tower is kept, under its own name: layers read
``visual.transformer.resblocks.5``, and the pooled ``embedding`` is the
tower's output, ``encode_image`` before normalisation.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from ..errors import UnknownModelError, WeightsError
from ._common import Model, Tap, download_guard, file_sha256, input_size_of, load_state_dict, require, suggest

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class ImageTower(torch.nn.Module):
    """The image half of a CLIP model; its output is the image embedding."""

    def __init__(self, visual: torch.nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


def available_models() -> list[str]:
    """Every OpenCLIP model name, with its pretrained tags."""
    open_clip = require("open_clip", "clip")
    return sorted(f"{name}  ({', '.join(tags)})" if (tags := open_clip.list_pretrained_tags_by_model(name))
                  else name for name in open_clip.list_models())


def load(model_name: str | None, *, weights: str | None, model_path: Path | None, seed: int | None) -> Model:
    """See :func:`actstore.models.load_model`."""
    open_clip = require("open_clip", "clip")
    random_init = weights is not None and str(weights).lower() == "none"
    sha = None
    if model_path is not None and model_path.is_dir():
        if not (model_path / "open_clip_config.json").is_file():
            raise WeightsError(f"--model-path {model_path} has no open_clip_config.json: give an OpenCLIP "
                            "model folder, or a checkpoint file with --model-name")
        files = sorted(p for p in model_path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if not files:
            raise WeightsError(f"--model-path {model_path} holds no weights file ({', '.join(WEIGHT_SUFFIXES)})")
        name, pretrained = f"local-dir:{model_path}", None
        model_name = model_name or model_path.name
        sha, weights_id = file_sha256(*files), f"folder@{model_path.name}"
    elif model_path is not None:
        if not model_path.is_file():
            raise WeightsError(f"--model-path {model_path} does not exist: give an OpenCLIP checkpoint "
                            "file or model folder")
        name, pretrained = _known(open_clip, model_name), str(model_path)
        _, sha = load_state_dict(model_path)   # refuses a pickle carrying code before OpenCLIP reads it
        weights_id = f"file@{model_path.name}"
    elif random_init:
        name, pretrained, weights_id = _known(open_clip, model_name), None, "none"
        warnings.warn(f"{model_name} has RANDOM weights (--weights none): activations "
                      "are not those of a trained network", stacklevel=3)
    else:
        name = _known(open_clip, model_name)
        tags = open_clip.list_pretrained_tags_by_model(name)
        if not weights or str(weights).upper() == "DEFAULT" or weights not in tags:
            given = "" if not weights or str(weights).upper() == "DEFAULT" else f"{weights!r} is not one; "
            raise UnknownModelError(f"OpenCLIP {name} needs --weights naming a pretrained tag: {given}"
                            f"use one of {', '.join(tags) or '(none published)'}, or none")
        pretrained, weights_id = str(weights), str(weights)
    torch.manual_seed(0 if seed is None else seed)
    logging.disable(logging.ERROR)   # OpenCLIP logs each failure to the root logger: we say it once
    with download_guard(f"OpenCLIP weights for {model_name} ({weights_id})"):
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained,
                                                                        weights_only=True)
        except RuntimeError as error:
            if model_path is None or "Error(s) in loading state_dict" not in str(error):
                raise
            first = str(error).splitlines()[1:2] or [str(error)]
            raise WeightsError(f"weights file {model_path} does not fit OpenCLIP {name}: "
                            f"{first[0].strip()[:200]}") from error
        finally:
            logging.disable(logging.NOTSET)
    module = ImageTower(clip.visual).eval()
    return Model(module=module, transform=preprocess, name=model_name, weights=weights_id,
                 weights_sha256=sha, input_size=input_size_of(preprocess), source="open_clip",
                 embedding=Tap("visual"))


def _known(open_clip, model_name: str | None) -> str:
    if not model_name or model_name not in open_clip.list_models():
        raise UnknownModelError(suggest(str(model_name), open_clip.list_models(), "OpenCLIP model")
                        + " (see `actstore models --source open_clip`)")
    return model_name
