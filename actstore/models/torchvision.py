"""torchvision classification models by name (``--source torchvision``).

The weights come from disk (``model_path``), from torchvision's weights API
(cache or download), or are random; the preprocessing is always the chosen
weights' ``transforms()`` so that activations match what the published model saw.
"""
from __future__ import annotations

import socket
import warnings
from pathlib import Path

import torch
import torchvision
from torchvision.models import get_model, get_model_weights, list_models

from ..errors import UnknownModelError, WeightsError
from ._common import DOWNLOAD_TIMEOUT_S, Model, apply_state_dict, load_state_dict, suggest

# The nine models of the original THINGSvision extract.py.
ORIGINAL_MODELS = ("alexnet", "resnet50", "resnet101", "vgg13", "vgg13_bn", "vgg16",
                   "vgg16_bn", "vgg19", "vgg19_bn")


def available_models() -> list[str]:
    """Every torchvision classification model name."""
    return sorted(list_models(module=torchvision.models))


def load(model_name: str, *, weights: str | None = "DEFAULT",
               model_path: str | Path | None = None, seed: int | None = 0) -> Model:
    """Build a torchvision classification model in eval mode.

    Args:
        model_name: a name from ``available_models()``, e.g. ``"alexnet"``.
        weights: ``"DEFAULT"``, a weights enum name (``"IMAGENET1K_V1"``) or
            ``"none"`` for random initialisation. It also picks the preprocessing.
        model_path: a state-dict file, or a folder holding torchvision's
            checkpoint files (as ``$TORCH_HOME/hub/checkpoints``).
        seed: seeds random initialisation, so ``weights="none"`` runs (and
            their resumes) are reproducible.

    Returns:
        A :class:`Model`.

    Raises:
        UserError: unknown model or weights, a state dict that does not fit,
            a weights file that is not plain tensors, a download that fails.

    Example:
        >>> model = load_model("alexnet", weights="none")   # doctest: +SKIP
    """
    names = available_models()
    if model_name not in names:
        raise UnknownModelError(suggest(model_name, names, "model") + " (see `actstore models`)")
    enum = get_model_weights(model_name)
    random_init = weights is None or str(weights).lower() == "none"
    chosen = _weights_entry(enum, "DEFAULT" if random_init else str(weights), model_name)
    transform = chosen.transforms()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else seed)
        module = get_model(model_name, weights=None)
    sha = None
    if model_path is not None:
        file = _checkpoint_file(Path(model_path), chosen, model_name)
        state, sha = load_state_dict(file)
        apply_state_dict(module, state, file)
        weights_id = f"file@{file.name}"
    elif random_init:
        warnings.warn(f"{model_name} has RANDOM weights (--weights none): activations "
                      "are not those of a trained network", stacklevel=2)
        weights_id = "none"
    else:
        apply_state_dict(module, _download(chosen, model_name), None)
        weights_id = str(chosen)
    module.eval()
    return Model(module=module, transform=transform, name=model_name, weights=weights_id,
                 weights_sha256=sha, input_size=input_size(transform), source="torchvision",
                 preprocessing_weights=str(chosen))


def weights_argument(weights_id: str) -> str:
    """The ``--weights`` that rebuilds a store's recorded weights id or
    preprocessing entry (``AlexNet_Weights.IMAGENET1K_V1`` -> ``IMAGENET1K_V1``;
    stores before ``preprocessing_weights`` wrote ``ENTRY@file.pth``)."""
    return "none" if weights_id == "none" else weights_id.split("@")[0].split(".")[-1]


def _weights_entry(enum, weights: str, model_name: str):
    if weights.upper() == "DEFAULT":
        return enum.DEFAULT
    key = weights.split(".")[-1]
    members = list(enum.__members__)
    if key not in members:
        raise UnknownModelError(suggest(weights, members + ["DEFAULT", "none"], f"weights for {model_name}"))
    return enum[key]


def _checkpoint_file(path: Path, weights, model_name: str) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise WeightsError(f"--model-path {path} does not exist: give a state-dict file or a "
                        "folder of torchvision checkpoints")
    expected = Path(weights.url).name
    candidates = [path / expected, path / "hub" / "checkpoints" / expected, path / "checkpoints" / expected]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise WeightsError(f"--model-path {path} has no {expected} (the checkpoint of {weights} for "
                    f"{model_name}): pass the file itself or the folder that holds it")


def _download(weights, model_name: str) -> dict:
    """torchvision's cache or download, with a socket timeout so it cannot hang."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # urllib, socket, hash and HTTP errors all end here
        raise WeightsError(f"could not download {weights} for {model_name} ({type(error).__name__}: "
                        f"{str(error)[:120]}); on a machine without internet, pass "
                        f"--model-path with the checkpoint file, or --weights none") from error
    finally:
        socket.setdefaulttimeout(previous)


def input_size(transform) -> tuple[int, int]:
    crop = getattr(transform, "crop_size", None)
    if crop:
        crop = list(crop)
        return (int(crop[0]), int(crop[-1]))
    return (224, 224)


