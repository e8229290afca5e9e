"""The committed dashboards are what the generator writes, and hold together."""

from __future__ import annotations

import importlib.util
import json
import re
from types import ModuleType
from typing import Any

import pytest

from tests.support.paths import ROOT

DASHBOARDS = ROOT / "dashboards"
DATASOURCE_UIDS = {"prometheus", "loki"}
# Panels that show a quantity carry a unit; logs panels show text.
UNITLESS_TYPES = {"logs", "text"}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_regenerating_the_dashboards_gives_the_committed_files_byte_for_byte() -> None:
    generator = load_generator()

    for name, factory in generator.DASHBOARDS.items():
        assert generator.render(factory) == (DASHBOARDS / name).read_text(encoding="utf-8"), name
    assert sorted(generator.DASHBOARDS) == sorted(committed())


def test_the_dashboards_have_the_uids_the_alerts_and_readme_link_to() -> None:
    boards = committed()

    assert {b["uid"] for b in boards.values()} == {"calabi-sync-jobs", "calabi-sync-job", "calabi-exporter"}
    assert all(b["editable"] is False and "calabi-connect" in b["tags"] for b in boards.values())


@pytest.mark.parametrize("name", sorted(p.name for p in DASHBOARDS.glob("*.json")))
def test_every_panel_uses_a_provisioned_datasource_and_has_a_unit(name: str) -> None:
    board = committed()[name]
    for panel in board["panels"]:
        if panel["type"] == "row":  # a row only groups the panels below it
            continue
        assert panel["datasource"]["uid"] in DATASOURCE_UIDS, panel["title"]
        if panel["type"] not in UNITLESS_TYPES:
            assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), panel["title"]
        for target in panel["targets"]:
            if "rate(" in target.get("expr", ""):
                assert re.search(r"rate\([^)]*\[\$__rate_interval\]\)", target["expr"]), target["expr"]


def test_every_data_link_targets_an_existing_dashboard_and_variable() -> None:
    boards = {b["uid"]: b for b in committed().values()}
    links = [
        link["url"]
        for board in boards.values()
        for panel in board["panels"]
        for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
    ]

    assert links
    for url in links:
        match = re.match(r"/d/([^/]+)/[^?]+\?(.*)$", url)
        assert match, url
        target = boards[match.group(1)]
        variables = {v["name"] for v in target["templating"]["list"]}
        for parameter in re.findall(r"var-(\w+)=", match.group(2)):
            assert parameter in variables, url
