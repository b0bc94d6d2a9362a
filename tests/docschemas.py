"""The JSON schemas of portctl's documents (schemas/*.schema.json), resolved offline: one referencing
Registry built from the files, so `common.schema.json#/$defs/key` is read from disk, never fetched."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).parent.parent / "schemas"
DOCUMENTS = ("common", "plan", "apply", "snapshot", "audit", "validate")


@cache
def registry() -> Registry[Any]:
    resources = []
    for name in DOCUMENTS:
        schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
        Draft202012Validator.check_schema(schema)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def validator(name: str) -> Draft202012Validator:
    schema = registry().contents(f"https://portctl.dev/schemas/{name}.schema.json")
    return Draft202012Validator(schema, registry=registry())


def errors(name: str, doc: object) -> list[str]:
    """Every way `doc` breaks schemas/NAME.schema.json, each as `path: message`; [] if it is valid."""
    found = validator(name).iter_errors(doc)
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}" for e in found)
