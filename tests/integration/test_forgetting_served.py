"""Forgetting a connection against a real exporter: what Prometheus sees end, and odd names sent by python-requests."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

import requests

from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job
from tests.support.prometheus_server import Prometheus
from tests.support.waiting import wait_until

TOKEN = "forgetting-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SF, HUBSPOT, STRIPE = "Salesforce → Snowflake", "HubSpot/Marketing → BigQuery", "Stripe → Postgres"
FINISHED = "2026-04-06T08:03:17Z"


def test_prometheus_sees_a_forgotten_connections_series_end(
    exporter_process: Callable[..., ExporterProcess], prometheus_for: Callable[[str], Prometheus]
) -> None:
    exporter = exporter_process(env={"CALABI_INGEST_TOKENS": TOKEN})
    records = [job("sf1", finished_at=FINISHED), job("st1", connection=STRIPE, finished_at=FINISHED)]
    requests.post(exporter.url + "/api/v1/jobs", json={"jobs": records}, headers=AUTH, timeout=10)
    prometheus = prometheus_for(f"127.0.0.1:{exporter.port}")
    query = 'count(calabi_sync_jobs_total{status="succeeded"})'
    wait_until(lambda: prometheus.scalar(query) == 2, timeout=30, what="both connections in Prometheus")

    response = requests.delete(f"{exporter.url}/api/v1/connections/{STRIPE}", headers=AUTH, timeout=10)

    assert response.status_code == 200
    wait_until(lambda: prometheus.scalar(query) == 1, timeout=30, what="the forgotten series to go stale")
    result = prometheus.query('calabi_sync_jobs_total{status="succeeded"}')
    assert [r["metric"]["connection"] for r in result] == [SF]


# Names a connection can be stored under that a path does not carry as plainly as "Salesforce":
# a leading or trailing slash, an empty segment, a dot segment, characters of a query or fragment.
ODD_NAMES = ["/lead", "lead/", "a//b", "..", "what? #1 & more"]


def path_of(name: str) -> str:
    """The DELETE path of a connection: everything but letters and digits percent-encoded.

    Dots too: a client removes a ``..`` segment before sending (requests does).
    """
    return "/api/v1/connections/" + urllib.parse.quote(name, safe="").replace(".", "%2E")


def test_requests_against_a_running_exporter_forgets_each_odd_name_itself_without_a_redirect(
    exporter_process: Callable[..., ExporterProcess],
) -> None:
    exporter = exporter_process(env={"CALABI_INGEST_TOKENS": TOKEN})
    names = ["lead", *ODD_NAMES]
    records = [job(f"odd{n}", connection=name, finished_at=FINISHED) for n, name in enumerate(names)]
    stored = requests.post(exporter.url + "/api/v1/jobs", json={"jobs": records}, headers=AUTH, timeout=10)
    assert stored.json()["accepted"] == len(names)

    answers = [requests.delete(exporter.url + path_of(name), headers=AUTH, timeout=10) for name in ODD_NAMES]
    plain = requests.delete(exporter.url + "/api/v1/connections/lead", headers=AUTH, timeout=10)

    assert [(a.status_code, a.history, a.json()["connection_name"]) for a in answers] == [
        (200, [], name) for name in ODD_NAMES
    ]
    assert (plain.status_code, plain.history, plain.json()) == (
        200,
        [],
        {"connection_name": "lead", "forgotten": True, "jobs_kept": 1},
    )
