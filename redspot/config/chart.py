"""The Helm chart's values schema, made from the two sources that describe its keys.

``helm/redspot/values.schema.json`` is what Helm checks values against (``helm install``,
``helm template``, ``helm lint``). It is generated, never edited: ``redspot:`` is
redspot.yaml, described by ``redspot/config/schema.yaml`` (the one source for that file),
and the chart's own keys are described by ``helm/redspot/values.schema.yaml``.

``python -m redspot.config.chart`` (``make chart-schema``) writes it; a test checks that
the committed file is what this makes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from .loader import schema as redspot_schema

CHART = Path(__file__).resolve().parents[2] / "helm" / "redspot"


def values_schema(chart: Path = CHART) -> dict:
    """The chart's values schema (pure but for reading the two sources)."""
    own = yaml.safe_load((chart / "values.schema.yaml").read_text())
    redspot = {k: v for k, v in redspot_schema().items()
               if k not in ("$schema", "title", "definitions")}
    # redspot.yaml's definitions move to the chart schema's root, where its references
    # now point, under names of their own
    for name, definition in redspot_schema().get("definitions", {}).items():
        own.setdefault("definitions", {})[f"redspot-{name}"] = _moved(definition)
    redspot = _moved(redspot)
    described = own["properties"]["redspot"].get("description", "")
    own["properties"]["redspot"] = {
        "description": described,
        "allOf": [
            redspot,
            # in the chart, servers are pods: the local spawner has no machine to run on
            {"properties": {"spawner": {"properties": {"kind": {
                "const": "kubernetes",
                "description": "In the chart, always `kubernetes`.",
            }}}}},
        ],
    }
    return own


def _moved(node):
    """``node`` with each ``#/definitions/X`` reference made ``#/definitions/redspot-X``."""
    if isinstance(node, dict):
        return {k: (v.replace("#/definitions/", "#/definitions/redspot-")
                    if k == "$ref" and isinstance(v, str) else _moved(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_moved(v) for v in node]
    return node


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chart = Path(argv[0]) if argv else CHART
    target = chart / "values.schema.json"
    target.write_text(render(values_schema(chart)))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
