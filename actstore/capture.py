"""Extractor: the outputs of several modules of a network in one forward pass.

Hooks copy each requested module's output as it is produced, before later
in-place operations can change it, and stop the forward pass once the last
requested module has run. Tuple, list and ``ModelOutput`` outputs follow the
rule of :mod:`actstore.models.outputs` (element 0, or ``module[part]``), and
``embedding`` names the model's pooled image embedding.

The store's first axis is always the image: a block that runs sequence-first
(``tokens, images, dim``) is found by the probe, which runs a batch of a size
no other axis has, and its output is transposed. A feature map that comes
with its channels last (``N, H, W, C``: Swin stages, ConvNeXt block
internals) is stored channels first, ``N, C, H, W``, as every other one, so
that its axes are named and chunked as channel, height, width.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .errors import BadOptionError, UnknownModuleError
from .models import EMBEDDING, Model, Tap, suggest
from .models.outputs import PROBE_BATCH, batch_axis, channels_last, parse_layer, select

_PROBE_SIZES = (PROBE_BATCH, 7, 3)   # another size where an axis has the first one's length


class _StopForward(Exception):
    """Raised by a hook once every requested module has run: the rest of the
    network is not needed."""


class Extractor:
    """Captures the outputs of several layers in one forward pass.

    ``layers`` are module names as ``named_modules()`` spells them, with an
    optional part (``attn[1]``), or ``embedding`` (see the module docstring).
    Outputs are cloned inside the hook, before later in-place operations
    (AlexNet's ``ReLU(inplace=True)``) can change them, and the forward pass
    stops once the last requested module has run.

    Example:
        >>> extractor = Extractor(model, ["features.0", "classifier.4"])   # doctest: +SKIP
        >>> outputs = extractor(batch)        # {"features.0": (B, 64, 55, 55), ...}
    """

    def __init__(self, model: Model | torch.nn.Module, module_names: Sequence[str]) -> None:
        module = model.module if isinstance(model, Model) else model
        embedding = model.embedding if isinstance(model, Model) else None
        if not module_names:
            raise BadOptionError("no module given: pass --module-name (see `actstore layers MODEL`)")
        if len(set(module_names)) != len(module_names):
            raise BadOptionError("a --module-name is given twice: name each module once")
        modules = dict(module.named_modules())
        self.taps: dict[str, Tap] = {}
        for name in module_names:
            if name == EMBEDDING and embedding is not None:
                tap = embedding
            elif name == EMBEDDING and name not in modules:
                raise UnknownModuleError("this model has no pooled embedding: name a module (see `actstore layers`)")
            else:
                tap = parse_layer(name)
            if tap.module_name not in modules or (tap.module_name == "" and tap.part is None
                                                   and tap is not embedding):
                raise UnknownModuleError(suggest(tap.module_name or name, [n for n in modules if n], "module") +
                                " (see `actstore layers MODEL`)")
            self.taps[name] = tap
        self.module = module
        self.module_names = list(module_names)
        self._modules = {n: modules[n] for n in {tap.module_name for tap in self.taps.values()}}
        self.batch_axes: dict[str, int] | None = None   # found by probe()
        self.channels_last: set[str] = set()              # layers stored (N, C, H, W) from (N, H, W, C)

    def __call__(self, batch: torch.Tensor,
                 into: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Outputs of the requested layers for ``batch``, images first. ``into(name,
        output)``, when given, copies an output where the caller wants it (a
        reusable host buffer) instead of into a fresh clone."""
        return self._run(batch, stop_early=True, into=into)[0]

    def probe(self, batch: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """Per-image output shapes from full forward passes on copies of
        ``batch``'s first image, finding each layer's image axis; refuses
        modules that run more than once or give no tensor."""
        pending = set(self.module_names)
        shapes: dict[str, tuple[int, ...]] = {}
        axes: dict[str, int] = {}
        self.batch_axes = {name: 0 for name in self.module_names}   # raw outputs while probing
        self.channels_last = set()
        for size in _PROBE_SIZES:
            outputs, calls = self._run(batch[:1].repeat(size, *[1] * (batch.dim() - 1)), stop_early=False)
            repeated = [self.taps[n].module_name for n in self.module_names if calls[self.taps[n].module_name] > 1]
            if repeated:
                raise UnknownModuleError(f"module {repeated[0]} runs {calls[repeated[0]]} times per forward pass, "
                                "so its output is ambiguous: choose a module that runs once")
            for name in sorted(pending):
                shape = tuple(outputs[name].shape)
                axis = batch_axis(shape, size)
                if axis is not None:
                    axes[name], shapes[name] = axis, shape[:axis] + shape[axis + 1:]
                    pending.discard(name)
                elif size not in shape[:2]:
                    raise UnknownModuleError(f"layer {name}'s output {shape} for {size} images has no image "
                                    "axis first or second: choose another module")
            if not pending:
                break
        else:
            raise UnknownModuleError(f"layer {sorted(pending)[0]}: the image axis cannot be told apart from "
                            "another axis of the same length; choose another module")
        self.batch_axes = axes
        self.channels_last = {name for name in self.module_names if channels_last(shapes[name])}
        return {name: (shapes[name][2], *shapes[name][:2]) if name in self.channels_last else shapes[name]
                for name in self.module_names}

    def _run(self, batch: torch.Tensor, stop_early: bool, into: Callable | None = None):
        captured: dict[str, torch.Tensor] = {}
        calls: dict[str, int] = {name: 0 for name in self._modules}
        by_module: dict[str, list[str]] = {}
        for name in self.module_names:
            by_module.setdefault(self.taps[name].module_name, []).append(name)

        def hook_for(module_name: str) -> Callable:
            def hook(_module, inputs, output):
                calls[module_name] += 1
                for name in by_module[module_name]:
                    if name in captured:
                        continue
                    tap = self.taps[name]
                    value = select(inputs[0] if tap.of_input else output, tap.part, name)
                    axis = (self.batch_axes[name] if self.batch_axes is not None
                            else batch_axis(value.shape, len(batch)))   # not probed: this batch decides
                    if axis == 1:
                        value = value.transpose(0, 1)
                    if name in self.channels_last or (self.batch_axes is None and channels_last(value.shape[1:])):
                        value = value.permute(0, 3, 1, 2)
                    captured[name] = into(name, value) if into else value.detach().clone()
                if stop_early and len(captured) == len(self.module_names):
                    raise _StopForward
            return hook

        handles = [m.register_forward_hook(hook_for(n)) for n, m in self._modules.items()]
        try:
            with torch.inference_mode():
                self.module(batch)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in self.module_names if name not in captured]
        if missing:
            raise UnknownModuleError(f"module {self.taps[missing[0]].module_name or '(model output)'} did not run "
                            "in the forward pass: choose another module")
        return captured, calls
