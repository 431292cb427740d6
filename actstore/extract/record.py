"""What an extraction records in its store: the fingerprint a rerun must match, and its provenance."""
from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torchvision

from ..errors import ChangedImagesError
from ..images import ImageSet
from ..models import Model
from ..store import FORMAT_VERSION, Layout
from ..store.metadata.provenance import now, root_attrs
from .options import ExtractOptions

CHECK_BYTES = 4   # of each image's content fingerprint kept in the store, to name changed files


def fingerprint(model: Model, images: ImageSet, layout: Layout, options: ExtractOptions,
                contents: Sequence[bytes] | None = None) -> dict[str, Any]:
    """Everything that determines a store's contents. A rerun must match it to resume.

    ``contents`` are the images' content fingerprints (:meth:`ImageSet.contents`,
    read from the files when not given). A weights file counts by its SHA-256,
    not its name; the seed only where it picks images or initialises weights.
    """
    contents = images.contents() if contents is None else contents
    seeded = images.fraction < 1 or model.weights == "none"
    return {
        "format_version": FORMAT_VERSION,
        "model_name": model.name, "weights_sha256": model.weights_sha256,
        "weights": model.weights.split("@")[0] if model.weights_sha256 else model.weights,
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
        "images_content_sha256": hashlib.sha256(b"".join(contents)).hexdigest(),
        "rnd_seed": images.rnd_seed if seeded else None, "fraction": images.fraction,
    }


def refuse_changed_images(path, stored: Mapping[str, Any], attrs: Mapping[str, Any],
                          file_names: Sequence[str]) -> None:
    """Raise :class:`ChangedImagesError` naming the first few files whose
    content differs from the store's record, when the names are the same."""
    then, now = stored.get("fingerprint") or {}, attrs["fingerprint"]
    if not stored.get("image_checks") or then.get("images_sha256") != now["images_sha256"] \
            or then.get("images_content_sha256") == now["images_content_sha256"]:
        return
    old, new = (base64.b64decode(a["image_checks"]) for a in (stored, attrs))
    changed = [name for row, name in enumerate(file_names)
               if old[row * CHECK_BYTES:(row + 1) * CHECK_BYTES] != new[row * CHECK_BYTES:(row + 1) * CHECK_BYTES]]
    if changed:
        more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        raise ChangedImagesError(f"out path {path}: {len(changed)} image(s) differ in content from those the "
                                 f"store was started with: {', '.join(changed[:3])}{more}; point --in-path at "
                                 "the images the store was started with, or pass --overwrite to start again")


def image_checks(contents: Sequence[bytes]) -> str:
    """The first 4 bytes of each image's content fingerprint, in row order, as
    base64 (4 bytes an image: 140 KB of text for THINGS' 26,107 images): what
    names the files that differ when a resume's images do."""
    return base64.b64encode(b"".join(c[:CHECK_BYTES] for c in contents)).decode()


# Fingerprint keys a user sets with one flag: a resume that differs there is
# refused with the flag and the store's value, so the fix is one edit away.
_FLAGS = {"batch_size": "--batch-size", "amp": "--amp", "decoder": "--decoder", "dtype": "--dtype",
          "compression": "--compression", "compression_level": "--compression-level",
          "rnd_seed": "--rnd-seed", "fraction": "--fraction", "flatten": "--flatten-acts",
          "channels_last": "--channels-last"}


# Keys that follow from others (the chunk split from --dtype, shapes from
# --flatten-acts): the other key names the flag.
_DERIVED = ("chunks", "shapes")


def explain_difference(key: str, stored: Any, now: Any) -> str | None:
    """The one-line refusal for a resume whose fingerprint differs at ``key``
    (a flag's value), or None when no single flag sets it.

    Example:
        >>> explain_difference("batch_size", 8, 5).split(": ")[1]
        'rerun with --batch-size 8 to resume, or pass --overwrite to replace it'
    """
    if key == "images_content_sha256":
        return ("the images' contents differ from those the store was started with: point --in-path at "
                "them, or pass --overwrite to start again" if stored is not None else
                "the store was made by actstore 0.2, which did not record the images' contents, so a resume "
                "cannot check them: pass --overwrite to extract it again")
    if key in _DERIVED or (key == "rnd_seed" and None in (stored, now)):
        return ""   # follows from another difference; a seed that picks nothing is no difference
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
    """The new store's root attributes: model, images, codec, machine, the
    fingerprint, and this run (``runs``: time, in-path, command line; a resume
    adds its own, see :func:`this_run`)."""
    contents = images.contents()
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
        "image_checks": image_checks(contents), "runs": [this_run(images, options)],
    }
    return root_attrs(fields, fingerprint(model, images, layout, options, contents),
                      command_line=options.command_line)


def this_run(images: ImageSet, options: ExtractOptions) -> dict[str, str]:
    """One entry of the store's ``runs``: when, from which folder, with which command."""
    return {"time": now(), "in_path": str(Path(images.root).resolve()),
            "command_line": options.command_line or " ".join(sys.argv)}
