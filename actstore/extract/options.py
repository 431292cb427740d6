"""ExtractOptions: every option of an extraction, in one dataclass, validated once.

The CLI builds one from its flags; Python callers build one directly (or pass
the same names as keywords to :func:`actstore.extract`). A new option is one
field here and, if it can be wrong, one check in ``__post_init__``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .. import config
from ..errors import BadOptionError
from ..models import Model
from ..store import DTYPES, CodecSpec, Location, check_level, location

AMP_DTYPES = ("float16", "bfloat16")
DECODERS = ("pil", "torchvision")


@dataclass
class ExtractOptions:
    """What to extract, from which images and model, and how to store it.

    Pass ``model_name`` of a ``source`` family (torchvision, timm, open_clip,
    hf; weights from ``model_path`` or ``weights``) or a ready ``model`` (see
    :func:`actstore.models.from_module`). ``shard`` is ``"I/N"``
    or ``(I, N)``; under ``torchrun`` it (and the CUDA device) comes from
    ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. After validation ``shard`` is
    ``(I, N)``, ``amp`` is None or a dtype name and ``num_workers`` a number.

    Example:
        >>> ExtractOptions(model_name="alexnet", module_names=["features.11"],
        ...                in_path="images", out_path="alexnet.zarr")        # doctest: +SKIP
    """

    in_path: str | Path
    out_path: str | Path
    module_names: Sequence[str]
    model_name: str | None = None
    source: str = "torchvision"
    model: Model | None = None
    model_path: str | Path | None = None
    weights: str | None = "DEFAULT"
    batch_size: int = config.BATCH_SIZE
    device: str = "cpu"
    flatten_acts: bool = False
    fraction: float = 1.0
    rnd_seed: int = 42
    things: bool = False
    things_tsv: str | Path | None = None
    file_format: str | None = None
    dtype: str = "float32"
    compression: str | None = None   # None: the store's own on a rerun, else the format's default
    compression_level: int | None = None
    chunk_images: int = config.CHUNK_IMAGES
    chunk_channels: int | None = None
    zarr_shard_rows: int | None = None   # None: chosen per store (store.sharding); 0: unsharded
    num_workers: int | None = None
    skip_bad_images: bool = False
    shard: str | tuple[int, int] | None = None
    dry_run: bool = False
    force: bool = False
    amp: str | None = None
    channels_last: bool = False
    decoder: str = "pil"
    overwrite: bool = False
    repair: bool = False   # a resume also recomputes rows whose chunks fail their checksum
    quiet: bool = False
    command_line: str | None = None
    torch_device: torch.device = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise BadOptionError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.chunk_images < 1:
            raise BadOptionError(f"--chunk-images must be at least 1, got {self.chunk_images}")
        if self.dtype not in DTYPES:
            raise BadOptionError(f"unknown --dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.compression is not None:
            CodecSpec(self.compression, self.compression_level)   # refuses an unknown codec or level
        elif self.compression_level is not None:   # the format's default codec, or the store's on a rerun
            check_level(None, self.compression_level)
        if self.chunk_channels is not None and self.chunk_channels < 1:
            raise BadOptionError(f"--chunk-channels must be at least 1, got {self.chunk_channels}")
        if self.num_workers is not None and self.num_workers < 0:
            raise BadOptionError(f"--num-workers must be 0 or more, got {self.num_workers}")
        self.amp = None if self.amp in (None, "", "none") else self.amp
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise BadOptionError(f"unknown --amp {self.amp!r}: use none, {', '.join(AMP_DTYPES)}")
        if self.decoder not in DECODERS:
            raise BadOptionError(f"unknown --decoder {self.decoder!r}: use one of {', '.join(DECODERS)}")
        self.module_names = list(self.module_names)
        index, count, self.device = shard_and_device(self.shard, self.device)
        self.shard = (index, count)
        self.torch_device = resolve_device(self.device)
        if self.num_workers is None:
            self.num_workers = config.num_workers(self.torch_device.type)
        if self.shard[1] > 1 and self.overwrite:
            raise BadOptionError("--overwrite cannot be combined with --shard (each process would delete "
                                 "the others' rows): remove the old store once, then start the shards")

    @property
    def out_location(self) -> Location:
        """``out_path`` as a local path or a URL."""
        return location(self.out_path)

    @property
    def progress_label(self) -> str:
        index, count = self.shard
        return "extract" if count == 1 else f"shard {index}/{count}"


def resolve_device(device: str) -> torch.device:
    """The torch device for ``device``, refusing one that is not there."""
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise BadOptionError(f"unknown --device {device!r}: use cpu, cuda or cuda:N") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise BadOptionError(f"--device {device}: no CUDA device is available here; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise BadOptionError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise BadOptionError(f"--device {device}: MPS is not available here; use --device cpu")
    return resolved


def shard_and_device(shard: str | tuple[int, int] | None, device: str) -> tuple[int, int, str]:
    """This process's share ``(index, count)`` and device; torchrun's variables
    stand in for ``--shard`` when it is not given."""
    if shard is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            shard = (int(os.environ.get("RANK", "0")), world)
            if device == "cuda":
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        else:
            shard = (0, 1)
    if isinstance(shard, str):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if not match:
            raise BadOptionError(f"--shard {shard!r} is not I/N (e.g. 0/4 for the first of four processes)")
        shard = (int(match[1]), int(match[2]))
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise BadOptionError(f"--shard {index}/{count}: I must be in 0..N-1")
    return index, count, device
