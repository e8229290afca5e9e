"""The metric family table: named the Prometheus way, every label bounded, its reference page generated."""

from __future__ import annotations

from typing import Any

import pytest
from calabi_exporter import metrics_reference
from calabi_exporter.metric_families import (
    CONNECTION_FAMILIES,
    REPLICA_FAMILIES,
    SERIES_FAMILY,
    STORE_FAMILIES,
    Family,
)

from tests.support.paths import ROOT

FAMILIES: list[Family[Any]] = [*CONNECTION_FAMILIES, *REPLICA_FAMILIES, *STORE_FAMILIES, SERIES_FAMILY]


def test_the_committed_metrics_reference_is_generated_from_the_table() -> None:
    committed = (ROOT / metrics_reference.PAGE).read_text(encoding="utf-8")

    assert committed == metrics_reference.render(), (
        "docs/metrics-reference.md drifted: run"
        " python -m calabi_exporter.metrics_reference -o docs/metrics-reference.md"
    )


def test_every_family_has_its_own_name() -> None:
    names = [family.name for family in FAMILIES]

    assert len(names) == len(set(names))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_every_family_is_named_the_prometheus_way(family: Family[Any]) -> None:
    assert family.name.startswith(("calabi_sync_", "calabi_exporter_"))
    assert family.name.endswith("_total") == (family.kind == "counter")
    assert not family.help[0].islower() and family.help.endswith(".")  # a sentence
    assert len(set(family.labels)) == len(family.labels)
    assert "le" not in family.labels


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_every_label_is_documented_with_its_bound(family: Family[Any]) -> None:
    assert set(family.labels) <= set(metrics_reference.LABELS)


def test_a_job_id_is_a_label_of_one_family_only() -> None:
    assert [family.name for family in FAMILIES if "job_id" in family.labels] == ["calabi_sync_last_job_info"]


def test_the_reference_lists_every_family_in_scrape_order() -> None:
    page = metrics_reference.render()
    listed = [line.split("`")[1] for line in page.splitlines() if line.startswith("| `calabi_")]

    assert listed == [family.name for family in FAMILIES]
