"""timm models by name (``--source timm``): ``timm.create_model``.

Weights: a pretrained tag (``--weights augreg_in21k_ft_in1k`` or the name
``vit_tiny_patch16_224.augreg_in21k_ft_in1k``; ``DEFAULT`` is timm's default
tag) from timm's own cache or the hub, a checkpoint file (``--model-path``:
safetensors or a plain state dict), or random (``none``). Preprocessing is
timm's ``resolve_data_config`` with ``create_transform`` for the model.
The pooled ``embedding`` is timm's pre-logits: the input of the classifier.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import UnknownModelError, WeightsError
from ._common import Model, Tap, apply_state_dict, download_guard, input_size_of, load_state_dict, require, suggest


def available_models() -> list[str]:
    """Every timm architecture (``timm.list_models()``)."""
    return sorted(require("timm", "timm").list_models())


def load(model_name: str, *, weights: str | None, model_path: Path | None, seed: int | None) -> Model:
    """See :func:`actstore.models.load_model`."""
    timm = require("timm", "timm")
    import torch
    architecture, _, tag = model_name.partition(".")
    if not timm.is_model(architecture):
        raise UnknownModelError(suggest(architecture, timm.list_models(), "timm model")
                        + " (see `actstore models --source timm`)")
    random_init = weights is not None and str(weights).lower() == "none"
    if weights and not random_init and str(weights).upper() != "DEFAULT":
        tag = str(weights)
    sha = None
    torch.manual_seed(0 if seed is None else seed)
    if model_path is not None:
        if model_path.is_dir():
            raise WeightsError(f"--model-path {model_path} is a folder: give the timm checkpoint file "
                            "(.safetensors, .pth or .bin)")
        state, sha = load_state_dict(model_path)
        state = {k.removeprefix("module."): v for k, v in state.items()}   # saved from DataParallel
        module = timm.create_model(architecture, pretrained=False,
                                   num_classes=_num_classes(timm, architecture, state))
        apply_state_dict(module, state, model_path)
        weights_id = f"file@{model_path.name}"
    elif random_init:
        warnings.warn(f"{model_name} has RANDOM weights (--weights none): activations "
                      "are not those of a trained network", stacklevel=3)
        module = timm.create_model(architecture, pretrained=False)
        weights_id = "none"
    else:
        full = f"{architecture}.{tag}" if tag else architecture
        with download_guard(f"timm weights for {full}"):
            module = timm.create_model(full, pretrained=True)
        weights_id = module.pretrained_cfg.get("tag") or "default"
    module.eval()
    config = timm.data.resolve_data_config({}, model=module)
    transform = timm.data.create_transform(**config, is_training=False)
    classifier = module.get_classifier() if hasattr(module, "get_classifier") else None
    names = [n for n, m in module.named_modules() if m is classifier and n]
    return Model(module=module, transform=transform, name=architecture, weights=weights_id,
                 weights_sha256=sha, input_size=input_size_of(transform), source="timm",
                 embedding=Tap(names[0], of_input=True) if names else None)


def _num_classes(timm, architecture: str, state: dict) -> int:
    """The classifier size a checkpoint holds (0 for one saved without a head),
    so fine-tuned and headless checkpoints load as they were saved."""
    config = timm.models.get_pretrained_cfg(architecture)
    classifier = (config.classifier if config is not None else None) or "head"
    weight = state.get(f"{classifier}.weight")
    if weight is None:
        return 0
    return int(weight.shape[0])
