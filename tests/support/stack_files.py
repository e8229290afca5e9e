"""The shipped stack's files as the tests read them: YAML from the repository, compose bind mounts."""

from __future__ import annotations

from typing import Any

import yaml

from .paths import ROOT


def load(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Host path (relative to the repo) -> container path of a compose service's bind mounts."""
    out = {}
    for mount in service.get("volumes", []):
        if mount.startswith("./"):
            host, container = mount.split(":")[:2]
            out[host] = container
    return out
