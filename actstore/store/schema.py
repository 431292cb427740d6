"""JSON Schemas of the store's attributes (``schemas/`` at the top of the repo)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import jsonschema

from ..errors import UserError


def _schema_dir() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "schemas"   # installed wheel
    checkout = Path(__file__).resolve().parents[2] / "schemas"        # source checkout
    return packaged if packaged.is_dir() else checkout


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """``name`` is ``root`` or ``layer``."""
    return json.loads((_schema_dir() / f"{name}.schema.json").read_text())


def schema_errors(name: str, attrs: Mapping[str, Any]) -> list[str]:
    """Every way ``attrs`` break schema ``name``, as readable lines (empty when valid)."""
    validator = jsonschema.Draft202012Validator(load_schema(name),
                                                format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(dict(attrs)), key=lambda e: list(e.absolute_path))]


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
        raise UserError(f"{store.path} does not match the actstore schemas: {'; '.join(problems[:5])}")
