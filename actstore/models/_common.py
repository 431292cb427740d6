"""What every source shares: the Model record, safe weights files, readable transforms."""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import inspect
import json
import os
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import torch

from ..errors import MissingPackageError, UserError, WeightsError

# Seconds a download may stall before it fails: offline clusters must not hang.
DOWNLOAD_TIMEOUT_S = 30
HUB_PROBE_TIMEOUT_S = 5   # a hub that does not answer a TCP connect within this is treated as offline
OFFLINE_HINT = "on a machine without internet, pass --model-path with a local copy, or --weights none"


def suggest(name: str, choices: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.7)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {what} {name!r}{hint}"


@dataclass(frozen=True)
class Tap:
    """Where a stored layer comes from: a module's output (or, for ``of_input``,
    its first input), and for a tuple, list or ``ModelOutput`` the part to keep
    (an index or a key; ``None`` is the documented default, element 0)."""

    module_name: str
    part: int | str | None = None
    of_input: bool = False


@dataclass
class Model:
    """A network ready for extraction, with what the store records about it.

    ``embedding`` is where the pooled image embedding comes from, which the
    layer name ``embedding`` stores (CLIP's image embedding, the CLS/pooler
    output, timm's pre-logits); ``None`` where the source has no such notion.
    """

    module: torch.nn.Module
    transform: Callable[[Any], torch.Tensor]
    name: str
    # What the parameters are: a published entry or tag, "none" (random),
    # "file@NAME" / "folder@NAME" (``model_path``; weights_sha256 says which
    # file) or "user-module".
    weights: str
    weights_sha256: str | None = None
    input_size: tuple[int, int] = (224, 224)
    source: str = "torchvision"
    embedding: Tap | None = None
    # The published entry whose transforms preprocess the images where that is
    # chosen apart from the weights (torchvision): not the weights' identity.
    preprocessing_weights: str | None = None

    @property
    def preprocessing(self) -> str:
        return describe_transform(self.transform)

    def provenance(self) -> dict:
        return {"model_name": self.name, "source": self.source, "weights": self.weights,
                "weights_sha256": self.weights_sha256, "preprocessing_weights": self.preprocessing_weights,
                "preprocessing": self.preprocessing}


def describe_transform(transform: Any) -> str:
    """A readable, deterministic description of a transform, for the store and
    its fingerprint: full-precision means and stds (tensor reprs round to four
    decimals) and functions by name (their repr holds a memory address)."""
    steps = getattr(transform, "transforms", None)
    if isinstance(steps, (list, tuple)) and type(transform).__name__ == "Compose":
        return "Compose(" + ", ".join(describe_transform(t) for t in steps) + ")"
    if type(transform).__name__ == "Normalize" and hasattr(transform, "mean"):
        mean, std = (_floats(getattr(transform, k)) for k in ("mean", "std"))
        return f"Normalize(mean={mean}, std={std})"
    if inspect.isfunction(transform) or inspect.ismethod(transform):
        return f"{transform.__module__}.{transform.__qualname__}"
    return repr(transform)


def _floats(value: Any) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(v) for v in torch.as_tensor(value).flatten().tolist()]


def input_size_of(transform: Callable) -> tuple[int, int]:
    """The (height, width) a transform produces, measured on a blank image."""
    from PIL import Image
    out = transform(Image.new("RGB", (256, 256)))
    return (int(out.shape[-2]), int(out.shape[-1]))


def require(package: str, extra: str):
    """Import a source's package, or say which extra installs it."""
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise MissingPackageError(f"this source needs the {package} package: pip install 'actstore[{extra}]' "
                        f"({error})") from error


def file_sha256(*files: Path) -> str:
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_state_dict(file: Path) -> tuple[dict, str]:
    """Read a state dict (safetensors, or ``torch.load(weights_only=True)``)
    and return it with the file's SHA-256. A pickle that carries code is
    refused without running it.
    """
    if not file.is_file():
        raise WeightsError(f"weights file {file} not found: check --model-path")
    sha = file_sha256(file)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(file)), sha
        except Exception as error:  # safetensors raises its own SafetensorError
            raise WeightsError(f"weights file {file} is not a readable safetensors file ({error})") from error
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise WeightsError(f"weights file {file} is not a plain state dict of tensors; refused "
                        f"without running it ({_why_refused(error)})") from error
    for key in ("state_dict", "model", "state_dict_ema"):   # training checkpoints nest it
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {file} holds a {type(state).__name__}, not a state dict")
    return state, sha


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


def apply_state_dict(module: torch.nn.Module, state: dict, file: Path | None,
                     optional: Callable[[str], bool] = lambda key: False) -> None:
    """Load ``state`` into ``module``, naming missing and unexpected keys
    (``optional`` keys may be missing) instead of PyTorch's long message."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    where = f"weights file {file}" if file else "downloaded weights"
    own = module.state_dict()
    for key, value in state.items():   # torch would raise a many-line RuntimeError for these
        if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape:
            raise WeightsError(f"{where} does not fit {type(module).__name__}: {key} has shape "
                            f"{tuple(value.shape)} there but {tuple(own[key].shape)} in the model "
                            "(another variant, or another number of classes?)")
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not optional(k)]
    if missing or result.unexpected_keys:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", result.unexpected_keys)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{label}: {', '.join(keys[:5])}{more}")
        raise WeightsError(f"{where} does not fit {type(module).__name__}: " + "; ".join(parts))


@contextlib.contextmanager
def download_guard(what: str) -> Iterator[None]:
    """Downloads through the Hugging Face hub or plain URLs, with timeouts so
    that an offline machine fails at once, and any failure as one line that
    says how to pass a local copy."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    hub = _offline_unless_reachable()
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # hub, HTTP, socket and file errors all end here
        message = " ".join(str(error).split())[:200]
        hint = f"; {OFFLINE_HINT}" if _is_download_error(error) else ""
        raise WeightsError(f"could not load {what} ({type(error).__name__}: {message}){hint}") from error
    finally:
        socket.setdefaulttimeout(previous)
        if hub is not None:
            hub.HF_HUB_OFFLINE = False


def _offline_unless_reachable():
    """Put the Hugging Face hub (through which timm, OpenCLIP and transformers
    download) in offline mode when its endpoint cannot be reached in seconds:
    the hub's own retries take a minute to give up, and in offline mode cached
    files still load while missing ones fail at once. Behind a proxy the
    endpoint is not probed. Returns the constants module it changed, or None."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    if constants.HF_HUB_OFFLINE or any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return None
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=HUB_PROBE_TIMEOUT_S).close()
        return None
    except OSError:
        constants.HF_HUB_OFFLINE = True
        return constants


def _is_download_error(error: BaseException) -> bool:
    """A failure to reach or find something online (rather than a bad file)."""
    while error is not None:
        if isinstance(error, (OSError, TimeoutError, ConnectionError)) or any(
                word in type(error).__name__ for word in ("Connect", "Timeout", "HTTP", "Offline", "EntryNotFound",
                                                          "URL", "Hub", "Repository")):
            return True
        error = error.__cause__ or error.__context__
    return False


def json_repr(name: str, settings: dict) -> str:
    """``Name({...})`` with sorted keys: one text for one configuration."""
    return f"{name}({json.dumps(settings, sort_keys=True, default=str)})"
