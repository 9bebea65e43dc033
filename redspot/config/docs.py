"""The configuration reference (docs/configuration.md), generated from schema.yaml."""

from __future__ import annotations

from .loader import schema


def _type(node: dict, definitions: dict) -> str:
    if "$ref" in node:
        node = definitions[node["$ref"].rsplit("/", 1)[1]]
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(_type(n, definitions) for n in node["oneOf"])
    kind = node.get("type", "")
    if kind == "array":
        return f"list of {_type(node.get('items', {}), definitions)}"
    return kind


def _rows(node: dict, prefix: str, definitions: dict):
    if "$ref" in node:
        node = definitions[node["$ref"].rsplit("/", 1)[1]]
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        resolved = definitions[child["$ref"].rsplit("/", 1)[1]] if "$ref" in child else child
        description = " ".join(resolved.get("description", "").split())
        yield path, _type(child, definitions), description
        yield from _rows(resolved, path, definitions)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and "$ref" in extra:
        extra = definitions[extra["$ref"].rsplit("/", 1)[1]]
    if isinstance(extra, dict) and extra.get("properties"):
        yield from _rows(extra, f"{prefix}.<name>", definitions)


def schema_markdown() -> str:
    s = schema()
    definitions = s.get("definitions", {})
    lines = [
        "# Configuration reference: `redspot.yaml`",
        "",
        "<!-- generated from redspot/config/schema.yaml by `redspot config schema`; "
        "do not edit by hand -->",
        "",
        " ".join(s["description"].split()),
        "",
        "| key | type | description |",
        "| --- | --- | --- |",
    ]
    for path, kind, description in _rows(s, "", definitions):
        cell = description.replace("|", "\\|")
        lines.append(f"| `{path}` | {kind} | {cell} |")
    return "\n".join(lines) + "\n"
