"""A store's provenance: its root attributes, the run's fingerprint, and timestamps.

Every writer of stores (extract, import-legacy, rechunk) builds its root
attributes here, so the attributes the schema requires are assembled once.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
from typing import Any, Mapping

import numpy as np

from ..._version import __version__
from ..layout import FORMAT_NAME, FORMAT_VERSION


def now() -> str:
    """The current UTC time as ISO 8601, as every timestamp in a store."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def fingerprint_sha256(fingerprint: Mapping[str, Any]) -> str:
    """One digest of a fingerprint: two runs with equal digests write equal stores."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def root_attrs(fields: Mapping[str, Any], fingerprint: Mapping[str, Any], *,
               command_line: str | None = None, after: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The root attributes of a new store: format and version, creation time,
    ``fields`` (model, images, codec, machine: what the writer knows), the
    command line, ``status: incomplete`` and the fingerprint a rerun must match.

    Example:
        >>> root_attrs({"model_name": "alexnet"}, {"n_images": 3})["status"]
        'incomplete'
    """
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "actstore_version": __version__,
            "created": now(), **fields, "command_line": command_line or " ".join(sys.argv),
            "status": "incomplete", "fingerprint": dict(fingerprint),
            "fingerprint_sha256": fingerprint_sha256(fingerprint), **(after or {})}


def completed() -> dict[str, str]:
    """The attributes that mark a store whose every row is written."""
    return {"status": "complete", "completed": now()}


def fingerprint_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Each key on which two fingerprints differ, with both values, briefly."""
    keys = sorted(set(stored) | set(current))
    return [f"{k} (store: {json.dumps(stored.get(k))[:60]}, now: {json.dumps(current.get(k))[:60]})"
            for k in keys if stored.get(k) != current.get(k)]


def skipped_rows(attrs: Mapping[str, Any], n_rows: int) -> np.ndarray:
    """The (N,) mask of rows left out as unreadable images found mid-run
    (``skipped_images`` entries that carry a ``row``; images the pre-check
    found bad have no row at all). Such rows are never written, and a store
    is complete when every other row is.

    Example:
        >>> skipped_rows({"skipped_images": [{"file_name": "b.jpg", "reason": "", "row": 1}]}, 3).tolist()
        [False, True, False]
    """
    mask = np.zeros(n_rows, dtype=bool)
    rows = [int(s["row"]) for s in attrs.get("skipped_images") or () if s.get("row") is not None]
    mask[[r for r in rows if 0 <= r < n_rows]] = True
    return mask


def is_complete(written: np.ndarray, skipped: np.ndarray) -> bool:
    """The one definition of a complete store's rows, which extract, rechunk,
    export and verify share: each row is written or recorded as skipped (an
    unreadable image, see :func:`skipped_rows`).

    Example:
        >>> is_complete(np.array([True, False]), np.array([False, True]))
        True
    """
    return bool((np.asarray(written, dtype=bool) | np.asarray(skipped, dtype=bool)).all())


def skipped_note(skipped: int, dropped: bool, kept_as: str) -> str:
    """What an export or a copy did with the rows of skipped images, for its output line.

    Example:
        >>> skipped_note(2, True, "NaN rows")
        '; 2 skipped image(s) dropped'
    """
    if not skipped:
        return ""
    return (f"; {skipped} skipped image(s) dropped" if dropped else
            f"; {skipped} skipped image(s) kept as {kept_as} (see skipped_images; --drop-skipped leaves them out)")
