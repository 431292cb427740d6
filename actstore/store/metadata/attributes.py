"""Attributes as every reader and writer of netCDF, HDF5 and Zarr accepts them.

Both backends store attributes through :func:`encode` and read them through
:func:`decode`, so the stored form is the same in Zarr and HDF5 and the Python
API still hands out ``None``, bools and dicts:

- ``None`` is not stored (netCDF has no null): the key is left out. Root keys
  that may be null (:data:`NULLABLE`) read back as ``None`` when absent.
- bools are stored as the integers 0 and 1 (netCDF has no bool type, and
  netCDF-C drops bool attributes); their keys are listed in ``_bool_keys``.
- dicts, empty lists and lists of anything but strings or numbers are stored as
  JSON text; their keys are listed in ``_json_keys``. Non-empty lists of
  strings or of numbers stay arrays.

``xarray.open_zarr(store).to_netcdf(path)`` then writes every attribute as it is.
"""
from __future__ import annotations

import json
from numbers import Number
from typing import Any, Mapping

import numpy as np

JSON_KEYS = "_json_keys"   # attributes stored as JSON text
BOOL_KEYS = "_bool_keys"   # attributes stored as 0/1
MARKERS = (JSON_KEYS, BOOL_KEYS)
# Root attributes whose value may be null: absent from the store, None to Python.
NULLABLE = ("weights_sha256", "preprocessing_weights", "compression_level", "amp", "rnd_seed")


def _kind(value: Any) -> str:
    """How ``value`` is stored: ``none``, ``bool``, ``json`` or ``plain``."""
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (str, Number, np.generic)):
        return "plain"
    if isinstance(value, (list, tuple)) and value and (
            all(isinstance(v, str) for v in value)
            or all(isinstance(v, Number) and not isinstance(v, (bool, np.bool_)) for v in value)):
        return "plain"
    return "json"


def _marker(stored: Mapping[str, Any], key: str) -> set[str]:
    value = stored.get(key)
    if value is None:
        return set()
    return set(json.loads(value.decode() if isinstance(value, bytes) else str(value)))


def encode(attrs: Mapping[str, Any], stored: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The attributes to set and the keys to delete so that a node holding
    ``stored`` (its raw attributes) then reads back as ``stored`` merged with ``attrs``.

    Example:
        >>> values, removed = encode({"flattened": True, "amp": None, "fingerprint": {"a": 1}})
        >>> values
        {'flattened': 1, 'fingerprint': '{"a": 1}', '_json_keys': '["fingerprint"]', '_bool_keys': '["flattened"]'}
        >>> removed
        ['amp']
    """
    stored = stored or {}
    json_keys, bool_keys = _marker(stored, JSON_KEYS), _marker(stored, BOOL_KEYS)
    values: dict[str, Any] = {}
    removed: list[str] = []
    for key, value in attrs.items():
        kind = _kind(value)
        json_keys.discard(key)
        bool_keys.discard(key)
        if kind == "none":
            removed.append(key)
        elif kind == "bool":
            values[key] = int(value)
            bool_keys.add(key)
        elif kind == "json":
            values[key] = json.dumps(value)
            json_keys.add(key)
        else:
            values[key] = value.item() if isinstance(value, np.generic) else \
                str(value) if isinstance(value, str) else list(value) if isinstance(value, tuple) else value
    for key, keys in ((JSON_KEYS, json_keys), (BOOL_KEYS, bool_keys)):
        if keys or key in stored:
            values[key] = json.dumps(sorted(keys))
    return values, removed


def encoded(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` as a store holds them (markers left out): what the schemas describe."""
    return {k: v for k, v in encode(attrs)[0].items() if k not in MARKERS}


def decode(stored: Mapping[str, Any], nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    """Python values of a node's raw attributes (HDF5 arrays and bytes included)."""
    json_keys, bool_keys = _marker(stored, JSON_KEYS), _marker(stored, BOOL_KEYS)
    out: dict[str, Any] = {key: None for key in nullable}
    for key, value in stored.items():
        if key in MARKERS:
            continue
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.ndarray):
            value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
        elif isinstance(value, np.generic):
            value = value.item()
        if key in json_keys:
            value = json.loads(value)
        elif key in bool_keys:
            value = bool(value)
        out[key] = value
    return out
