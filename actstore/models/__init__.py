"""Models by name, their weights and preprocessing, and the module tree.

A model is any ``torch.nn.Module`` plus the transform that turns a PIL image
into its input. For torchvision models by name, the weights come from disk
(``model_path``), from torchvision's weights API (cache or download), or are
random; the preprocessing is always the chosen weights' ``transforms()`` so
that activations match what the published model saw.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import pickle
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torchvision.models import get_model, get_model_weights, list_models

from ..errors import UserError

# The nine models of the original THINGSvision extract.py.
ORIGINAL_MODELS = ("alexnet", "resnet50", "resnet101", "vgg13", "vgg13_bn", "vgg16",
                   "vgg16_bn", "vgg19", "vgg19_bn")
DOWNLOAD_TIMEOUT_S = 30


def available_models() -> list[str]:
    """Every torchvision classification model name."""
    return sorted(list_models(module=torchvision.models))


def suggest(name: str, choices: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.7)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {what} {name!r}{hint}"


@dataclass
class Model:
    """A network ready for extraction, with what the store records about it."""

    module: torch.nn.Module
    transform: Callable[[Any], torch.Tensor]
    name: str
    weights: str
    weights_sha256: str | None = None
    input_size: tuple[int, int] = (224, 224)
    extra: dict = field(default_factory=dict)

    @property
    def preprocessing(self) -> str:
        return repr(self.transform)

    def provenance(self) -> dict:
        return {"model_name": self.name, "weights": self.weights,
                "weights_sha256": self.weights_sha256, "preprocessing": self.preprocessing}


def load_model(model_name: str, *, weights: str | None = "DEFAULT",
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
        raise UserError(suggest(model_name, names, "model") + " (see `actstore models`)")
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
        _apply_state_dict(module, state, file)
        weights_id = f"{chosen}@{file.name}"
    elif random_init:
        warnings.warn(f"{model_name} has RANDOM weights (--weights none): activations "
                      "are not those of a trained network", stacklevel=2)
        weights_id = "none"
    else:
        _apply_state_dict(module, _download(chosen, model_name), None)
        weights_id = str(chosen)
    module.eval()
    return Model(module=module, transform=transform, name=model_name, weights=weights_id,
                 weights_sha256=sha, input_size=_input_size(transform))


def from_module(module: torch.nn.Module, transform: Callable, *, name: str | None = None,
                input_size: tuple[int, int] | None = None) -> Model:
    """Wrap any module and transform, for users of the Python API.

    Example:
        >>> model = from_module(torch.nn.Sequential(...), my_transform, name="mynet")  # doctest: +SKIP
    """
    module.eval()
    return Model(module=module, transform=transform, name=name or type(module).__name__,
                 weights="user-module", input_size=input_size or _input_size(transform))


def load_state_dict(file: Path) -> tuple[dict, str]:
    """Read a state dict with ``weights_only=True`` and return it with the file's SHA-256.

    A pickle that carries code is refused without running it.
    """
    if not file.is_file():
        raise UserError(f"weights file {file} not found: check --model-path")
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise UserError(f"weights file {file} is not a plain state dict of tensors; refused "
                        f"without running it ({_why_refused(error)})") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"weights file {file} holds a {type(state).__name__}, not a state dict")
    return state, digest.hexdigest()


def _why_refused(error: Exception, limit: int = 160) -> str:
    """The telling line of torch's refusal (which global the pickle wanted),
    shortened at a word boundary."""
    text = str(error)
    if "WeightsUnpickler error:" in text:   # torch's own words come after that marker
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "global" in line.lower() or "unsupported" in line.lower()]
    telling = (named or lines or [type(error).__name__])[0]
    if len(telling) <= limit:
        return telling
    return telling[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def _weights_entry(enum, weights: str, model_name: str):
    if weights.upper() == "DEFAULT":
        return enum.DEFAULT
    key = weights.split(".")[-1]
    members = list(enum.__members__)
    if key not in members:
        raise UserError(suggest(weights, members + ["DEFAULT", "none"], f"weights for {model_name}"))
    return enum[key]


def _checkpoint_file(path: Path, weights, model_name: str) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"--model-path {path} does not exist: give a state-dict file or a "
                        "folder of torchvision checkpoints")
    expected = Path(weights.url).name
    candidates = [path / expected, path / "hub" / "checkpoints" / expected, path / "checkpoints" / expected]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"--model-path {path} has no {expected} (the checkpoint of {weights} for "
                    f"{model_name}): pass the file itself or the folder that holds it")


def _apply_state_dict(module: torch.nn.Module, state: dict, file: Path | None) -> None:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = module.state_dict()
    for key, value in state.items():   # torch would raise a many-line RuntimeError for these
        if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape:
            where = f"weights file {file}" if file else "downloaded weights"
            raise UserError(f"{where} does not fit {type(module).__name__}: {key} has shape "
                            f"{tuple(value.shape)} there but {tuple(own[key].shape)} in the model "
                            "(another variant, or another number of classes?)")
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        where = f"weights file {file}" if file else "downloaded weights"
        parts = []
        if result.missing_keys:
            parts.append(f"missing keys: {', '.join(result.missing_keys[:5])}"
                         + (f" (+{len(result.missing_keys) - 5} more)" if len(result.missing_keys) > 5 else ""))
        if result.unexpected_keys:
            parts.append(f"unexpected keys: {', '.join(result.unexpected_keys[:5])}"
                         + (f" (+{len(result.unexpected_keys) - 5} more)" if len(result.unexpected_keys) > 5 else ""))
        raise UserError(f"{where} does not fit {type(module).__name__}: " + "; ".join(parts))


def _download(weights, model_name: str) -> dict:
    """torchvision's cache or download, with a socket timeout so it cannot hang."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # urllib, socket, hash and HTTP errors all end here
        raise UserError(f"could not download {weights} for {model_name} ({type(error).__name__}: "
                        f"{str(error)[:120]}); on a machine without internet, pass "
                        f"--model-path with the checkpoint file, or --weights none") from error
    finally:
        socket.setdefaulttimeout(previous)


def _input_size(transform) -> tuple[int, int]:
    crop = getattr(transform, "crop_size", None)
    if crop:
        crop = list(crop)
        return (int(crop[0]), int(crop[-1]))
    return (224, 224)


@dataclass(frozen=True)
class ModuleInfo:
    """One row of the module tree: what ``--module-name`` can name."""

    name: str
    type: str
    shape: tuple[int, ...] | None   # per image; None when the output is not a tensor
    calls: int                      # times it ran in one forward pass

    @property
    def depth(self) -> int:
        return self.name.count(".")

    def bytes_per_image(self, itemsize: int = 4) -> int | None:
        return None if self.shape is None else int(math.prod(self.shape)) * itemsize


def module_tree(model: Model, device: str | torch.device = "cpu") -> list[ModuleInfo]:
    """Every named module with its per-image output shape, from one forward
    pass on a dummy batch of one image.

    Example:
        >>> [m.name for m in module_tree(load_model("alexnet", weights="none"))][:3]   # doctest: +SKIP
        ['features', 'features.0', 'features.1']
    """
    named = [(n, m) for n, m in model.module.named_modules() if n]
    shapes: dict[str, tuple[int, ...] | None] = {}
    calls: dict[str, int] = {n: 0 for n, _ in named}

    def hook_for(name):
        def hook(_module, _inputs, output):
            calls[name] += 1
            if name not in shapes:
                shapes[name] = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in named]
    try:
        model.module.to(device)
        with torch.inference_mode():
            model.module(torch.zeros(1, 3, *model.input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return [ModuleInfo(n, type(m).__name__, shapes.get(n), calls[n]) for n, m in named]
