"""Extractor: the outputs of several modules of a network in one forward pass.

Hooks copy each requested module's output as it is produced, before later
in-place operations can change it, and stop the forward pass once the last
requested module has run.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .errors import UserError
from .models import suggest


class _StopForward(Exception):
    """Raised by a hook once every requested module has run: the rest of the
    network is not needed."""


class Extractor:
    """Captures the outputs of several modules in one forward pass.

    Outputs are cloned inside the hook, before later in-place operations
    (AlexNet's ``ReLU(inplace=True)``) can change them, and the forward pass
    stops once the last requested module has run.

    Example:
        >>> extractor = Extractor(model.module, ["features.0", "classifier.4"])   # doctest: +SKIP
        >>> outputs = extractor(batch)        # {"features.0": (B, 64, 55, 55), ...}
    """

    def __init__(self, module: torch.nn.Module, module_names: Sequence[str]) -> None:
        if not module_names:
            raise UserError("no module given: pass --module-name (see `actstore layers MODEL`)")
        modules = dict(module.named_modules())
        for name in module_names:
            if name not in modules or name == "":
                raise UserError(suggest(name, [n for n in modules if n], "module") +
                                " (see `actstore layers MODEL`)")
        if len(set(module_names)) != len(module_names):
            raise UserError("a --module-name is given twice: name each module once")
        self.module = module
        self.module_names = list(module_names)
        self._modules = {name: modules[name] for name in module_names}

    def __call__(self, batch: torch.Tensor,
                 into: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Outputs of the requested modules for ``batch``. ``into(name, output)``,
        when given, copies an output where the caller wants it (a reusable
        host buffer) instead of into a fresh clone."""
        return self._run(batch, stop_early=True, into=into)[0]

    def probe(self, batch: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """Per-image output shapes from a full forward pass, refusing modules
        that run more than once or return something other than a tensor."""
        outputs, calls = self._run(batch, stop_early=False)
        repeated = [name for name, count in calls.items() if count > 1]
        if repeated:
            raise UserError(f"module {repeated[0]} runs {calls[repeated[0]]} times per forward pass, "
                            "so its output is ambiguous: choose a module that runs once")
        return {name: tuple(out.shape[1:]) for name, out in outputs.items()}

    def _run(self, batch: torch.Tensor, stop_early: bool, into: Callable | None = None):
        captured: dict[str, torch.Tensor] = {}
        calls: dict[str, int] = {name: 0 for name in self.module_names}

        def hook_for(name: str) -> Callable:
            def hook(_module, _inputs, output):
                calls[name] += 1
                if not isinstance(output, torch.Tensor):
                    raise UserError(f"module {name} returns a {type(output).__name__}, not a tensor: "
                                    "choose one of its submodules (see `actstore layers`)")
                if name not in captured:
                    captured[name] = into(name, output) if into else output.detach().clone()
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
            raise UserError(f"module {missing[0]} did not run in the forward pass: choose another module")
        return captured, calls
