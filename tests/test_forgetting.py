"""Forgetting a connection: by request, or by the purge once none of its jobs is left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from calabi_exporter.config import Config
from calabi_exporter.store import Store
from calabi_exporter.web import create_app
from flask import Flask
from flask.testing import FlaskClient

from .conftest import ExporterProcess, FakeClock, Prometheus, Samples, job, parse_samples, wait_until

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

TOKEN = "forgetting-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SF, HUBSPOT, STRIPE = "Salesforce → Snowflake", "HubSpot/Marketing → BigQuery", "Stripe → Postgres"
FINISHED = "2026-04-06T08:03:17Z"
# Scrape-wide values that change with anything: compared apart.
SCRAPE_WIDE = ("calabi_exporter_series", "calabi_exporter_store_size_bytes")


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse_samples(response.get_data(as_text=True))


def of(samples: Samples, connection: str | None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of ``connection`` (None: those of no connection), scrape-wide values left out."""
    return {
        key: value
        for key, value in samples.store_samples().items()
        if dict(key[1]).get("connection") == connection and key[0] not in SCRAPE_WIDE
    }


def post(client: FlaskClient, *records: dict[str, object]) -> None:
    response = client.post("/api/v1/jobs", json={"jobs": list(records)}, headers=AUTH)
    assert response.status_code == 200 and response.get_json()["rejected"] == 0, response.get_json()


def test_forgetting_a_connection_removes_its_series_and_moves_nothing_else(open_app: Callable[..., Flask]) -> None:
    client = open_app(ingest_tokens=(TOKEN,)).test_client()
    streams = [{"name": "Account", "status": "succeeded", "records_synced": 4}]
    post(
        client,
        job("sf1", finished_at=FINISHED, records_synced=10, streams=streams),
        job(
            "hs1", "failed", connection=HUBSPOT, finished_at=FINISHED, error_summary="401 Unauthorized", streams=streams
        ),
        job("hs2", "running", connection=HUBSPOT),
        job("st1", connection=STRIPE, finished_at=FINISHED, records_synced=7),
    )
    client.post("/api/v1/jobs/hs1/logs", data="ERROR 401 Unauthorized", content_type="text/plain", headers=AUTH)
    before = scrape(client)

    response = client.delete("/api/v1/connections/HubSpot/Marketing%20%E2%86%92%20BigQuery", headers=AUTH)
    after = scrape(client)

    assert response.status_code == 200
    assert response.get_json() == {"connection_name": HUBSPOT, "forgotten": True, "jobs_kept": 2}
    assert of(before, HUBSPOT) and not of(after, HUBSPOT)
    assert of(after, SF) == of(before, SF) and of(after, STRIPE) == of(before, STRIPE)
    assert of(after, None) == of(before, None)  # exporter-wide counters, stored jobs included
    assert client.get("/api/v1/jobs/hs1", headers=AUTH).get_json()["status"] == "failed"  # the jobs stay
    names = [c["connection_name"] for c in client.get("/api/v1/connections", headers=AUTH).get_json()["connections"]]
    assert names == [SF, STRIPE]


def test_a_job_after_forgetting_starts_the_connection_afresh(open_app: Callable[..., Flask]) -> None:
    client = open_app(ingest_tokens=(TOKEN,)).test_client()
    post(client, job("sf1", finished_at=FINISHED, records_synced=10))
    client.delete("/api/v1/connections/Salesforce%20%E2%86%92%20Snowflake", headers=AUTH)

    post(client, job("sf2", finished_at="2026-04-06T09:00:00Z", records_synced=3))

    samples = scrape(client)
    assert samples[("calabi_sync_records_synced_total", frozenset({("connection", SF)}))] == 3


def test_forgetting_needs_the_ingest_token_and_a_known_connection(open_app: Callable[..., Flask]) -> None:
    client = open_app(ingest_tokens=(TOKEN,)).test_client()
    post(client, job("sf1", finished_at=FINISHED))

    anonymous = client.delete("/api/v1/connections/Salesforce%20%E2%86%92%20Snowflake")
    unknown = client.delete("/api/v1/connections/Nobody", headers=AUTH)

    assert (anonymous.status_code, anonymous.get_json()["field"]) == (401, "Authorization")
    assert (unknown.status_code, unknown.get_json()) == (404, {"error": "no connection 'Nobody'", "field": "name"})
    assert ("calabi_sync_jobs_total", frozenset({("connection", SF), ("status", "succeeded")})) in scrape(client)


def test_forgetting_frees_a_place_in_the_series_budget(open_app: Callable[..., Flask]) -> None:
    client = open_app(ingest_tokens=(TOKEN,), limits_max_connections=1).test_client()
    post(client, job("a1", connection="A", finished_at=FINISHED), job("b1", connection="B", finished_at=FINISHED))
    client.delete("/api/v1/connections/A", headers=AUTH)

    post(client, job("c1", connection="C", finished_at=FINISHED))

    jobs = {
        dict(key)["connection"]: value
        for (name, key), value in scrape(client).items()
        if name == "calabi_sync_jobs_total" and ("status", "succeeded") in key
    }
    assert jobs == {"C": 1, "__overflow__": 1}  # B keeps counting under overflow, where it started


def test_the_purge_forgets_connections_without_a_job_left(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    store = make_store(tmp_path / "data", clock=clock)
    client = create_app(Config(data_dir=str(tmp_path / "data")), store=store, clock=clock).test_client()
    client.post("/api/v1/jobs", json=job("old", connection="Gone", finished_at="2026-03-01T00:00:00Z"))
    client.post("/api/v1/jobs", json=job("new", finished_at=FINISHED))
    kept = of(scrape(client), SF)

    purged = store.retention.purge(finished_before=clock() - 30 * 86400)

    samples = scrape(client)
    assert purged == 1
    assert not of(samples, "Gone")
    assert of(samples, SF) == kept
    assert samples[("calabi_exporter_purged_jobs_total", frozenset())] == 1
    store.close()


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
