"""Validate JSON answers against Alpaca's own OpenAPI specs (``../shared/reference/alpaca``)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SPECS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "alpaca"


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` → JSON Schema's null type."""
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            if "type" in node:
                node["type"] = [node["type"], "null"] if isinstance(node["type"], str) else [*node["type"], "null"]
            elif "$ref" in node or "allOf" in node or "oneOf" in node:
                node = {"anyOf": [{k: v for k, v in node.items()}, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@lru_cache(maxsize=2)
def _spec(name: str) -> dict[str, Any]:
    return _nullable(json.loads((SPECS / name).read_text()))


def response_schema(path: str, method: str, status: int, spec: str = "trading-api.json") -> dict[str, Any]:
    responses = _spec(spec)["paths"][path][method.lower()]["responses"]
    content = responses[str(status)]
    while "$ref" in content:  # a shared response object
        name = content["$ref"].rsplit("/", 1)[-1]
        content = _spec(spec)["components"]["responses"][name]
    return content["content"]["application/json"]["schema"]


def validate(body: Any, path: str, method: str, status: int = 200, spec: str = "trading-api.json") -> None:
    """Raise ``jsonschema.ValidationError`` unless ``body`` matches the spec's answer."""
    schema = {**response_schema(path, method, status, spec), "components": _spec(spec)["components"]}
    Draft202012Validator(schema).validate(body)


def validate_error(body: Any, spec: str = "trading-api.json") -> None:
    """An error body against the spec's ``Error`` schema (``{"code", "message"}``)."""
    schema = {"$ref": "#/components/schemas/Error", "components": _spec(spec)["components"]}
    Draft202012Validator(schema).validate(body)
