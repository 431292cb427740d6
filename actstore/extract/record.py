"""What an extraction records in its store: the fingerprint a rerun must match, and its provenance."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision

from ..images import ImageSet
from ..models import Model
from ..store import FORMAT_VERSION, Layout
from ..store.metadata.provenance import root_attrs
from .options import ExtractOptions


def fingerprint(model: Model, images: ImageSet, layout: Layout, options: ExtractOptions) -> dict[str, Any]:
    """Everything that determines a store's contents. A rerun must match it to resume."""
    return {
        "format_version": FORMAT_VERSION,
        "model_name": model.name, "weights": model.weights, "weights_sha256": model.weights_sha256,
        "preprocessing": model.preprocessing,
        # only for the new sources, so that stores made before them still resume
        **({"source": model.source} if model.source != "torchvision" else {}),
        "layers": [spec.module_name for spec in layout.layers],
        "shapes": {spec.module_name: list(spec.shape) for spec in layout.layers},
        "chunks": {spec.module_name: list(spec.chunks) for spec in layout.layers},
        "dtype": layout.layers[0].dtype, "flatten": options.flatten_acts, "amp": options.amp,
        "channels_last": options.channels_last, "decoder": options.decoder,
        "compression": layout.compression, "compression_level": layout.compression_level,
        # the batch shapes the kernels CPU/GPU libraries pick, so the last bits too
        "batch_size": options.batch_size,
        "images_sha256": images.digest(), "n_images": len(images),
        "rnd_seed": images.rnd_seed, "fraction": images.fraction,
    }


# Fingerprint keys a user sets with one flag: a resume that differs there is
# refused with the flag and the store's value, so the fix is one edit away.
_FLAGS = {"batch_size": "--batch-size", "amp": "--amp", "decoder": "--decoder", "dtype": "--dtype",
          "compression": "--compression", "compression_level": "--compression-level",
          "rnd_seed": "--rnd-seed", "fraction": "--fraction", "flatten": "--flatten-acts",
          "channels_last": "--channels-last"}


def explain_difference(key: str, stored: Any, now: Any) -> str | None:
    """The one-line refusal for a resume whose fingerprint differs at ``key``
    (a flag's value), or None when no single flag sets it.

    Example:
        >>> explain_difference("batch_size", 8, 5).split(": ")[1]
        'rerun with --batch-size 8 to resume, or pass --overwrite to replace it'
    """
    flag = _FLAGS.get(key)
    if flag is None or (stored is None and key not in ("amp", "compression_level")):
        return None   # not a flag, or a store from before the key was recorded

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "on" if v else "off"
        return str(v) if v is not None else "none" if key == "amp" else "default"

    def use(v: Any) -> str:
        if v is None and key == "amp":
            return f"{flag} none"
        return f"without {flag}" if v is None or v is False else flag if v is True else f"{flag} {v}"

    advice = use(stored) if use(stored).startswith("without") else f"with {use(stored)}"
    return (f"{flag} {value(now)} differs from the store's {value(stored)}: rerun {advice} "
            "to resume, or pass --overwrite to replace it")


def store_attrs(model: Model, images: ImageSet, layout: Layout, options: ExtractOptions,
                skipped: list[dict]) -> dict[str, Any]:
    """The new store's root attributes: model, images, codec, machine, and the fingerprint."""
    fields = {
        **model.provenance(),
        "dtype": layout.layers[0].dtype, "compression": layout.compression,
        "compression_level": layout.level, "chunk_images": layout.chunk_images,
        "flatten_acts": options.flatten_acts,
        "torch_version": str(torch.__version__), "torchvision_version": str(torchvision.__version__),
        "device": str(options.torch_device), "torch_threads": torch.get_num_threads(), "amp": options.amp,
        "rnd_seed": images.rnd_seed, "fraction": images.fraction,
        "in_path": str(Path(images.root).resolve()), "image_layout": images.layout,
        "things": options.things, "n_images": len(images), "skipped_images": skipped,
    }
    return root_attrs(fields, fingerprint(model, images, layout, options), command_line=options.command_line)
