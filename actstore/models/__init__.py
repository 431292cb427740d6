"""Models by source and name, their weights and preprocessing, and the module tree.

A model is any ``torch.nn.Module`` plus the transform that turns a PIL image
into its input. Four sources build one by name, each with its own weights
and its own preprocessing (one module each):

- ``torchvision``: ``torchvision.models`` (``alexnet``), weights enums;
- ``timm``: ``timm.create_model`` (``vit_small_patch14_dinov2``), pretrained tags;
- ``open_clip``: the image tower of OpenCLIP (``ViT-B-32``), pretrained tags (``openai``);
- ``hf``: Hugging Face transformers vision models (``facebook/dinov2-small``), revisions.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..errors import BadOptionError, UnknownModelError, UserError, WeightsError
from ._common import (
    DOWNLOAD_TIMEOUT_S,
    Model,
    Tap,
    apply_state_dict,
    describe_transform,
    input_size_of,
    load_state_dict,
    suggest,
)
from .outputs import PROBE_BATCH, batch_axis, channels_last, parse_layer, part_labels, select
from .torchvision import ORIGINAL_MODELS, available_models
from .torchvision import input_size as torchvision_input_size

# Each source is one module of this package with the same three functions:
# ``load(model_name, *, weights, model_path, seed) -> Model``, ``available_models()``
# and, where a recorded weights id is not itself the --weights that rebuilds
# it, ``weights_argument(weights_id)``. Imported on first use: each needs its
# own optional package.
SOURCES = ("torchvision", "timm", "open_clip", "hf")
EMBEDDING = "embedding"   # the layer name of a model's pooled image embedding


def _source_module(source: str):
    if source not in SOURCES:
        raise UnknownModelError(suggest(source, list(SOURCES), "--source") + f" (use one of {', '.join(SOURCES)})")
    return importlib.import_module(f".{source}", __name__)


def _weights_argument(source: str, weights_id: str) -> str:
    """The ``--weights`` that rebuilds a recorded weights id: the source's own
    rule, else the id itself (a file or folder, ``file@NAME``: its default entry,
    with the file given by ``--model-path``)."""
    rule = getattr(_source_module(source), "weights_argument", None)
    if rule is not None:
        return rule(weights_id)
    return "DEFAULT" if "@" in weights_id else weights_id


def load_model(model_name: str | None, *, source: str = "torchvision", weights: str | None = "DEFAULT",
               model_path: str | Path | None = None, seed: int | None = 0) -> Model:
    """Build a model of ``source`` in eval mode, with its own preprocessing.

    Args:
        model_name: as the family spells it: ``"alexnet"`` (torchvision),
            ``"vit_tiny_patch16_224"`` (timm), ``"ViT-B-32"`` (open_clip),
            ``"facebook/dinov2-small"`` (hf; may be omitted with a ``model_path``).
        source: ``torchvision``, ``timm``, ``open_clip`` or ``hf``.
        weights: torchvision's weights name, timm's or OpenCLIP's pretrained
            tag, or a Hugging Face revision; ``"DEFAULT"`` for the family's
            default; ``"none"`` for random initialisation.
        model_path: a checkpoint file (torchvision, timm, OpenCLIP; safetensors
            or a plain state dict) or a ``save_pretrained`` directory (hf).
        seed: seeds random initialisation, so ``weights="none"`` runs (and
            their resumes) are reproducible.

    Returns:
        A :class:`Model`.

    Raises:
        UserError: unknown source, model or weights; a missing package (naming
            the extra to install); a checkpoint that does not fit or is not
            plain tensors; a download that fails.

    Example:
        >>> model = load_model("vit_tiny_patch16_224", source="timm", weights="none")   # doctest: +SKIP
    """
    module = _source_module(source)
    if not model_name and (model_path is None or source not in ("hf", "open_clip")):   # folders name themselves
        raise BadOptionError("no model given: pass --model-name (see `actstore models`)")
    with torch.random.fork_rng(devices=[]):
        return module.load(model_name, weights=weights,
                           model_path=Path(model_path) if model_path is not None else None, seed=seed)


def list_models(source: str = "torchvision", pattern: str | None = None) -> list[str]:
    """The model names a source knows, filtered by a shell-style ``pattern``
    (for ``hf``: the models in the local Hugging Face cache)."""
    import fnmatch
    names = _source_module(source).available_models()
    if pattern:
        wanted = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        names = [n for n in names if fnmatch.fnmatch(n.lower(), wanted.lower())]
    return names


def reload(attrs: Mapping[str, Any], model_path: str | Path | None = None) -> Model:
    """The model a store was made with, from its root attributes (for
    ``verify --recompute``): same source, name, weights and seed."""
    source = attrs.get("source") or "torchvision"
    weights = str(attrs["weights"])
    if weights == "user-module":
        raise BadOptionError("--recompute needs a model by name; this store was made from a Python module")
    if attrs.get("weights_sha256") and model_path is None:
        raise BadOptionError(f"--recompute needs --model-path: the store was made from a weights file "
                        f"({weights.split('@')[-1]}, sha256 {attrs['weights_sha256'][:12]}...)")
    # A weights file's preprocessing entry is recorded apart (torchvision).
    chosen = weights if weights == "none" else str(attrs.get("preprocessing_weights") or weights)
    model = load_model(attrs["model_name"], source=source, weights=_weights_argument(source, chosen),
                       model_path=model_path, seed=attrs.get("rnd_seed"))
    if attrs.get("weights_sha256") and model.weights_sha256 != attrs["weights_sha256"]:
        raise WeightsError(f"--model-path {model_path} is not the weights file the store was made with "
                        "(SHA-256 differs)")
    return model


def from_module(module: torch.nn.Module, transform: Callable, *, name: str | None = None,
                input_size: tuple[int, int] | None = None, embedding: str | None = None) -> Model:
    """Wrap any module and transform, for users of the Python API. This is also
    how to give a model of any source one fixed transform: build it with
    :func:`load_model` and wrap its ``module`` with your own transform.

    ``embedding`` optionally names the module (with an optional part, as in
    ``"pool[0]"``) that the layer name ``embedding`` stores.

    Example:
        >>> vit = load_model("vit_tiny_patch16_224", source="timm", weights="none")   # doctest: +SKIP
        >>> model = from_module(vit.module, my_transform, name="vit_tiny")             # doctest: +SKIP
    """
    module.eval()
    tap = None
    if embedding is not None:
        tap = parse_layer(embedding)
    return Model(module=module, transform=transform, name=name or type(module).__name__,
                 weights="user-module", source="user-module", embedding=tap,
                 input_size=input_size or torchvision_input_size(transform))


@dataclass(frozen=True)
class ModuleInfo:
    """One row of the module tree: what ``--module-name`` can name.

    ``parts`` lists, for a module returning a tuple, list or ``ModelOutput``,
    each part's layer name (``attn[1]``, ``vision_model[pooler_output]``) and
    per-image shape (``None`` where the part is not a tensor); the first is
    what the bare module name stores.
    """

    name: str
    type: str
    shape: tuple[int, ...] | None   # per image; None when the output is not a tensor
    calls: int                      # times it ran in one forward pass
    parts: tuple[tuple[str, tuple[int, ...] | None], ...] = ()

    @property
    def depth(self) -> int:
        return self.name.count(".")

    def bytes__per_image(self, itemsize: int = 4) -> int | None:
        return None if self.shape is None else int(math.prod(self.shape)) * itemsize

    def describe(self) -> str:
        """The output column of ``actstore layers``."""
        def size(shape):
            return "x".join(map(str, shape)) if shape is not None else "(not a tensor)"
        if self.calls == 0:
            return "(does not run)"
        if self.parts:
            text = "  ".join(f"{label} {size(shape)}" for label, shape in self.parts)
        else:
            text = size(self.shape)
        return text + (f"  runs {self.calls}x" if self.calls > 1 else "")


def module_tree(model: Model, device: str | torch.device = "cpu") -> list[ModuleInfo]:
    """Every named module with its per-image output shape (the image axis
    found and removed as the extractor does, so sequence-first blocks show
    ``tokens x dim``, and channels-last maps their stored ``C x H x W``), and
    the parts of tuple outputs, from one forward pass
    on a small dummy batch. The pooled ``embedding`` comes first where the
    model has one.

    Example:
        >>> [m.name for m in module_tree(load_model("alexnet", weights="none"))][:3]   # doctest: +SKIP
        ['features', 'features.0', 'features.1']
    """
    named = [(n, m) for n, m in model.module.named_modules() if n]
    outputs: dict[str, Any] = {}
    calls: dict[str, int] = {n: 0 for n, _ in named}

    def hook_for(name):
        def hook(_module, _inputs, output):
            calls[name] += 1
            outputs.setdefault(name, output)
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in named]
    embedded = {}
    if model.embedding is not None:
        target = dict(model.module.named_modules())[model.embedding.module_name]
        handles.append(target.register_forward_hook(
            lambda _m, inputs, output: embedded.setdefault("out", inputs[0] if model.embedding.of_input else output)))
    try:
        model.module.to(device)
        with torch.inference_mode():
            model.module(torch.zeros(PROBE_BATCH, 3, *model.input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()

    rows = []
    if model.embedding is not None and "out" in embedded:
        try:
            value = select(embedded["out"], model.embedding.part, EMBEDDING)
        except UserError:
            value = None
        where = model.embedding.module_name or "(model output)"
        rows.append(ModuleInfo(EMBEDDING, f"pooled image embedding: {'input of ' if model.embedding.of_input else ''}"
                               f"{where}{'' if model.embedding.part is None else f'[{model.embedding.part}]'}",
                               _per_image(value), 1))
    for n, m in named:
        output = outputs.get(n)
        parts = tuple((f"{n}{label}", _per_image(value)) for label, value in part_labels(output))
        rows.append(ModuleInfo(n, type(m).__name__, _per_image(output), calls[n], parts))
    return rows


def _per_image(value) -> tuple[int, ...] | None:
    """A probe output's per-image shape as the extractor stores it (image axis
    removed, channels-last maps as C x H x W); None for what is not a tensor."""
    if not isinstance(value, torch.Tensor):
        return None
    axis = batch_axis(value.shape, PROBE_BATCH)
    shape = list(value.shape)
    if axis is None:
        return tuple(shape)
    del shape[axis]
    return (shape[2], *shape[:2]) if channels_last(shape) else tuple(shape)


__all__ = ["DOWNLOAD_TIMEOUT_S", "EMBEDDING", "ORIGINAL_MODELS", "SOURCES", "Model", "ModuleInfo", "Tap",
           "apply_state_dict", "available_models", "describe_transform", "from_module", "input_size_of",
           "list_models", "load_model", "load_state_dict", "module_tree", "reload", "suggest"]
