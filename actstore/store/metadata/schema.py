"""JSON Schemas of the store's attributes (``schemas/`` at the top of the repo)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import jsonschema

from ...errors import InvalidStoreError
from .attributes import encoded


def _schema_dir() -> Path:
    packaged = Path(__file__).resolve().parents[2] / "schemas"   # installed wheel: actstore/schemas
    checkout = Path(__file__).resolve().parents[3] / "schemas"   # source checkout: schemas/ at the top
    return packaged if packaged.is_dir() else checkout


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """``name`` is ``root`` or ``layer``."""
    return json.loads((_schema_dir() / f"{name}.schema.json").read_text())


def schema_errors(name: str, attrs: Mapping[str, Any]) -> list[str]:
    """Every way ``attrs`` (as the Python API gives them) break schema ``name``
    once stored, as readable lines (empty when valid). JSON text attributes are
    also checked against their ``contentSchema``."""
    schema = load_schema(name)
    stored = encoded(attrs)
    problems = _errors(schema, stored, "")
    for key, prop in schema["properties"].items():
        if "contentSchema" in prop and isinstance(stored.get(key), str):
            try:
                value = json.loads(stored[key])
            except ValueError:
                problems.append(f"{key}: is not JSON text")
                continue
            problems += _errors(prop["contentSchema"], value, f"{key}/")
    return problems


def _errors(schema: dict, value: Any, prefix: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return [f"{prefix}{'/'.join(map(str, e.absolute_path)) or ('(root)' if not prefix else '')}: {e.message}"
            .replace("/:", ":") for e in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))]


def store_problems(store) -> list[str]:
    """Every way the root's and each layer's attributes break the schemas."""
    problems = [f"root {p}" for p in schema_errors("root", store.attrs)]
    for layer in store.layers:
        problems += [f"layer {layer} {p}" for p in schema_errors("layer", store.layer_attrs(layer))]
    return problems


def validate_store(store) -> None:
    """Raise UserError unless the root and every layer's attributes match the schemas."""
    problems = store_problems(store)
    if problems:
        raise InvalidStoreError(f"{store.path} does not match the actstore schemas: {'; '.join(problems[:5])}")
