"""How a stored layer names a module's output, and how that output becomes one tensor.

- ``encoder.layer.5`` stores the module's output. If that output is a tuple,
  list or ``ModelOutput``, element 0 is stored (``last_hidden_state`` for a
  ``ModelOutput``); if element 0 is not a tensor, the module is refused with
  a message naming its parts.
- ``attn[1]`` stores element 1 of a tuple or list (or of a ``ModelOutput``),
  ``vision_model[pooler_output]`` the named field of a ``ModelOutput`` or
  dict; ``[image_embeds]`` a part of the whole model's output.
- ``embedding`` stores the model's pooled image embedding, where its source
  defines one (a :class:`Tap` on :class:`~actstore.models.Model`).

The image axis of an output is found by running a batch of a size no other
axis has (:func:`batch_axis`): sequence-first blocks put it second. Feature
maps with channels last (:func:`channels_last`) are stored channels first,
``(C, H, W)``, as every other feature map.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Sequence

import torch

from ..errors import UnknownModuleError
from ._common import Tap

PROBE_BATCH = 5   # images in a probe batch: few models have an axis (heads, tokens) of 5
_PART = re.compile(r"^(?P<module>[^\[\]]*)\[(?P<part>[^\[\]]+)\]$")


def parse_layer(layer: str) -> Tap:
    """``"attn[1]"`` -> ``Tap("attn", 1)``; ``"x[pooler_output]"`` -> ``Tap("x", "pooler_output")``.

    Example:
        >>> parse_layer("encoder.layer.5.attention[0]")
        Tap(module_name='encoder.layer.5.attention', part=0, of_input=False)
    """
    match = _PART.match(layer)
    if not match:
        if "[" in layer or "]" in layer:
            raise UnknownModuleError(f"layer {layer!r} is not MODULE or MODULE[PART] (e.g. blocks.5.attn[1], "
                            "vision_model[pooler_output])")
        return Tap(layer)
    part = match["part"].strip().strip("'\"")
    return Tap(match["module"], int(part) if re.fullmatch(r"-?\d+", part) else part)


def part_labels(output: Any) -> list[tuple[str, Any]]:
    """``("[0]", value), ...`` for a tuple or list, ``("[key]", value), ...`` for a
    ``ModelOutput`` or dict; empty for anything else."""
    if isinstance(output, Mapping):
        return [(f"[{key}]", value) for key, value in output.items()]
    if isinstance(output, (tuple, list)):
        return [(f"[{i}]", value) for i, value in enumerate(output)]
    return []


def select(output: Any, part: int | str | None, layer: str) -> torch.Tensor:
    """The tensor ``layer`` stores from a module's ``output`` (rule in the module docstring)."""
    if isinstance(output, torch.Tensor):
        if part is not None:
            raise UnknownModuleError(f"module of layer {layer} returns one tensor: drop the [{part}]")
        return output
    parts = part_labels(output)
    if not parts:
        raise UnknownModuleError(f"layer {layer} is a {type(output).__name__}, not a tensor: choose one of its "
                        "submodules (see `actstore layers`)")
    base = layer.split("[")[0]
    labels = ", ".join(f"{base}{label}" for label, _ in parts[:6])
    if part is None:
        value = parts[0][1]
        if not isinstance(value, torch.Tensor):
            raise UnknownModuleError(f"module {layer} returns a {type(output).__name__} whose first element is a "
                            f"{type(value).__name__}: name the part to store, one of {labels}")
        return value
    if isinstance(part, int):
        values = output.to_tuple() if hasattr(output, "to_tuple") else list(output.values()) \
            if isinstance(output, Mapping) else output
        if not -len(values) <= part < len(values):
            raise UnknownModuleError(f"layer {layer}: the {type(output).__name__} has {len(values)} parts; "
                                     f"use one of {labels}")
        value = values[part]
    else:
        if not isinstance(output, Mapping) or part not in output:
            raise UnknownModuleError(f"layer {layer}: the {type(output).__name__} has no part {part!r}; "
                                     f"use one of {labels}")
        value = output[part]
    if not isinstance(value, torch.Tensor):
        raise UnknownModuleError(f"layer {layer} is a {type(value).__name__}, not a tensor: use one of {labels}")
    return value


def channels_last(shape: Sequence[int]) -> bool:
    """Whether a per-image output of shape ``shape`` is a feature map with its
    channels last, ``(H, W, C)``, as Swin stages and ConvNeXt block internals
    return them: three axes, the first two equal (a square map) and the last
    not. Channels-first maps ``(C, H, W)`` have their last two equal; a map
    whose three axes are equal is taken as channels first.

    Example:
        >>> channels_last((56, 56, 96)), channels_last((96, 56, 56)), channels_last((12, 197, 197))
        (True, False, False)
    """
    return len(shape) == 3 and shape[0] == shape[1] != shape[2]


def batch_axis(shape: Sequence[int], batch: int) -> int | None:
    """The axis of a probe output that holds the images: 0, or 1 for a
    sequence-first output; ``None`` when neither (or both) has the batch's size."""
    first = len(shape) > 0 and shape[0] == batch
    second = len(shape) > 1 and shape[1] == batch
    if first and not second:
        return 0
    if second and not first:
        return 1
    return None
