"""Cut a vendor's OpenAPI document down to the operations the pollers call, with every schema they reference.

The vendors' whole documents do not load in Prism as published (Airbyte's public API refers to schemas it
does not define) or are large (Fivetran's is 3 MB); the operations kept are copied unchanged. Run:

    python tests/data/sources/openapi/cut.py [--security SCHEME] <whole document> <path> [<path> ...] > <cut document>

``--security SCHEME`` makes the document's top-level requirement that scheme, for a document that
declares a scheme but requires none (Airbyte's configuration API says ``security: [{}]``, while its
server with authentication on, as Airbyte Cloud and a self-managed Airbyte 1.x are, wants the bearer
token; Prism reads ``[{}]`` as "no Authorization header allowed"). It is the one change ever made.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*map(_refs, node)) if node else set()
    return set()


def cut(document: dict[str, Any], paths: list[str], security: str | None = None) -> dict[str, Any]:
    out = {key: value for key, value in document.items() if key not in ("paths", "components")}
    if security is not None:
        out["security"] = [{security: []}]
    out["paths"] = {path: document["paths"][path] for path in paths}
    components: dict[str, dict[str, Any]] = {}
    if "securitySchemes" in document.get("components", {}):
        components["securitySchemes"] = document["components"]["securitySchemes"]
    waiting = _refs(out["paths"])
    done: set[str] = set()
    while waiting:
        ref = waiting.pop()
        done.add(ref)
        _, _, kind, name = ref.split("/", 3)
        value = document["components"][kind][name]
        components.setdefault(kind, {})[name] = value
        waiting |= _refs(value) - done
    out["components"] = {kind: dict(sorted(items.items())) for kind, items in sorted(components.items())}
    return out


if __name__ == "__main__":
    arguments = sys.argv[1:]
    scheme = None
    if arguments[:1] == ["--security"]:
        scheme, arguments = arguments[1], arguments[2:]
    source, *wanted = arguments
    with open(source, encoding="utf-8") as file:
        whole = json.load(file) if source.endswith(".json") else yaml.safe_load(file)
    json.dump(cut(whole, wanted, scheme), sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
