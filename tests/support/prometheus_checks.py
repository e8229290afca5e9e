"""Jobs posted to a running exporter and PromQL answers waited for: what the Prometheus tests share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from .exporter_process import ExporterProcess
from .prometheus_server import Prometheus

SF = "Salesforce → Snowflake"
STRIPE = "Stripe → Postgres"


def post(exporter: ExporterProcess, *records: dict[str, Any]) -> None:
    """Post ``records`` to the exporter's ingest API; every one must be accepted."""
    response = requests.post(exporter.url + "/api/v1/jobs", json={"jobs": list(records)}, timeout=30)
    assert response.status_code == 200 and response.json()["rejected"] == 0, response.text


def settled(prometheus: Prometheus, promql: str, expected: float) -> Callable[[], bool]:
    """A condition for ``wait_until``: ``promql`` answers ``expected`` (Prometheus scrapes on its own time)."""
    return lambda: prometheus.scalar(promql) == expected
