"""The series budget: connections and streams beyond it add up under ``__overflow__``, sums stay exact."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from calabi_exporter.config import Config, ConnectionSettings
from calabi_exporter.store import SeriesLimits, Store
from calabi_exporter.web import create_app
from flask import Flask
from flask.testing import FlaskClient

from .conftest import ExporterProcess, FakeClock, Prometheus, Samples, job, parse_samples, wait_until

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

CONNECTIONS = 12_000
BUDGET = 10_000  # the default limits.max_connections
FINISHED = "2026-04-06T08:03:17Z"
RULES = Path(__file__).parent.parent / "alerting-rules" / "calabi-sync.rules.yml"


def connection(n: int) -> str:
    return f"conn-{n:05d}"


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse_samples(response.get_data(as_text=True))


def values(samples: Samples, name: str, **labels: str) -> dict[str, float]:
    """``connection`` label -> value of the samples of ``name`` that carry ``labels``."""
    wanted = set(labels.items())
    return {dict(key)["connection"]: value for (n, key), value in samples.items() if n == name and wanted <= key}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlaskClient, Path]]:
    """An exporter (with the default budget) that took 12,000 connections, one job each; read-only for the tests."""
    data = tmp_path_factory.mktemp("fleet")
    app = create_app(Config(data_dir=str(data)), clock=FakeClock())
    client = app.test_client()
    records = [
        job(
            f"job-{n:05d}",
            "failed" if n % 10 == 0 else "succeeded",
            connection=connection(n),
            finished_at=FINISHED,
            duration_seconds=10,
            records_synced=n,
            bytes_synced=2 * n,
        )
        for n in range(CONNECTIONS)
    ]
    for start in range(0, CONNECTIONS, 10_000):
        response = client.post("/api/v1/jobs", json={"jobs": records[start : start + 10_000]})
        assert response.status_code == 200
        assert response.get_json()["accepted"] == len(records[start : start + 10_000])
    yield client, data
    app.extensions["calabi_exporter"].store.close()


@pytest.mark.slow
def test_connections_past_the_budget_add_up_under_overflow_with_exact_sums(
    fleet: tuple[FlaskClient, Path],
) -> None:
    samples = scrape(fleet[0])

    records = values(samples, "calabi_sync_records_synced_total")
    assert len(records) == BUDGET + 1
    assert {connection(n) for n in range(BUDGET)} | {"__overflow__"} == set(records)
    assert records["__overflow__"] == sum(range(BUDGET, CONNECTIONS))
    assert sum(records.values()) == sum(range(CONNECTIONS))
    assert sum(values(samples, "calabi_sync_bytes_synced_total").values()) == 2 * sum(range(CONNECTIONS))
    jobs = values(samples, "calabi_sync_jobs_total", status="failed")
    assert jobs["__overflow__"] == 200 and sum(jobs.values()) == CONNECTIONS // 10
    count = values(samples, "calabi_sync_job_duration_seconds_count", status="succeeded")
    assert count["__overflow__"] == 1800 and sum(count.values()) == CONNECTIONS - CONNECTIONS // 10
    assert samples[("calabi_exporter_cardinality_overflow_total", frozenset({("kind", "connection")}))] == 2000
    assert samples[("calabi_exporter_cardinality_overflow_total", frozenset({("kind", "stream")}))] == 0
    assert "__overflow__" not in values(samples, "calabi_sync_consecutive_failures")  # no gauges for many
    assert "__overflow__" not in values(samples, "calabi_sync_last_job_info")
    assert samples[("calabi_exporter_series", frozenset())] == len(samples)


def test_the_read_api_still_lists_every_connection_past_the_budget(fleet: tuple[FlaskClient, Path]) -> None:
    client = fleet[0]

    listed = client.get("/api/v1/connections?connection=conn-11999").get_json()["connections"]

    assert [(c["connection_name"], c["last_status"]) for c in listed] == [("conn-11999", "succeeded")]
    assert client.get("/api/v1/jobs/job-11999").get_json()["records_synced"] == 11999


@pytest.mark.slow
def test_a_restart_keeps_the_same_series(fleet: tuple[FlaskClient, Path]) -> None:
    client, data = fleet
    before = scrape(client)

    restarted = create_app(Config(data_dir=str(data)), clock=FakeClock())
    after = scrape(restarted.test_client())
    restarted.extensions["calabi_exporter"].store.close()

    assert after.store_samples() == before.store_samples()


def test_more_jobs_of_an_overflowed_connection_keep_adding_to_overflow(open_app: Callable[..., Flask]) -> None:
    client = open_app(limits_max_connections=2).test_client()
    for n in range(3):
        client.post(
            "/api/v1/jobs", json=job(f"a-{n}", connection=connection(n), finished_at=FINISHED, records_synced=1)
        )

    client.post("/api/v1/jobs", json=job("b-2", connection=connection(2), finished_at=FINISHED, records_synced=5))
    samples = scrape(client)

    assert values(samples, "calabi_sync_records_synced_total") == {
        connection(0): 1,
        connection(1): 1,
        "__overflow__": 6,
    }
    assert samples[("calabi_exporter_cardinality_overflow_total", frozenset({("kind", "connection")}))] == 2


def test_streams_past_the_budget_add_up_under_the_overflow_stream(open_app: Callable[..., Flask]) -> None:
    client = open_app().test_client()
    streams = [{"name": f"table_{n:03d}", "status": "succeeded", "records_synced": n} for n in range(500)]

    response = client.post("/api/v1/jobs", json=job("wide", finished_at=FINISHED, streams=streams))
    samples = scrape(client)

    per_stream = {
        dict(key)["stream"]: value
        for (name, key), value in samples.items()
        if name == "calabi_sync_stream_records_synced_total"
    }
    assert response.status_code == 200
    assert len(per_stream) == 101
    assert per_stream["__overflow__"] == sum(range(100, 500))
    assert sum(per_stream.values()) == sum(range(500))
    statuses = {dict(key)["stream"] for (name, key) in samples if name == "calabi_sync_stream_last_status"}
    assert len(statuses) == 100 and "__overflow__" not in statuses
    assert samples[("calabi_exporter_cardinality_overflow_total", frozenset({("kind", "stream")}))] == 1


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"per_stream_metrics": False}, id="globally"),
        pytest.param(
            {"connections": {"Salesforce → Snowflake": ConnectionSettings(per_stream_metrics=False)}},
            id="per connection",
        ),
    ],
)
def test_per_stream_metrics_off_drops_the_stream_series(
    open_app: Callable[..., Flask], settings: dict[str, object]
) -> None:
    client = open_app(**settings).test_client()
    streams = [{"name": "Account", "status": "succeeded", "records_synced": 3}]
    client.post("/api/v1/jobs", json=job("j1", finished_at=FINISHED, streams=streams))
    client.post("/api/v1/jobs", json=job("j2", connection="HubSpot → BigQuery", finished_at=FINISHED, streams=streams))

    samples = scrape(client)

    exposed = {dict(key)["connection"] for (name, key) in samples if name.startswith("calabi_sync_stream_")}
    assert exposed == (set() if "per_stream_metrics" in settings else {"HubSpot → BigQuery"})
    assert values(samples, "calabi_sync_streams_total", status="succeeded")["Salesforce → Snowflake"] == 1


@pytest.mark.parametrize(
    ("record", "field"),
    [
        pytest.param(job("j1", connection="__overflow__"), "connection_name", id="connection"),
        pytest.param(job("j1", streams=[{"name": "__overflow__"}]), "streams[0].name", id="stream"),
    ],
)
def test_the_overflow_name_is_reserved(open_app: Callable[..., Flask], record: dict[str, object], field: str) -> None:
    response = open_app().test_client().post("/api/v1/jobs", json=record)

    assert response.status_code == 400
    assert response.get_json()["field"] == field


def test_a_store_from_before_the_budget_keeps_every_connection_it_had(tmp_path: Path, clock: FakeClock) -> None:
    data = tmp_path / "data"
    old = Store.sqlite(data, clock=clock)
    create_app(Config(data_dir=str(data)), store=old, clock=clock).test_client().post(
        "/api/v1/jobs", json=[job(f"j{n}", connection=connection(n), finished_at=FINISHED) for n in range(3)]
    )
    old.close()
    db = sqlite3.connect(data / "calabi-exporter.sqlite3")
    db.executescript(  # the store as version 3 left it
        "ALTER TABLE connections DROP COLUMN admitted; ALTER TABLE connections DROP COLUMN version;"
        " DROP TABLE connection_overflow;"
        " DELETE FROM meta WHERE key IN ('admitted_connections', 'overflow_jobs_connection', 'overflow_jobs_stream',"
        " 'connections_version');"
        " PRAGMA user_version = 3;"
    )
    db.close()

    reopened = Store.sqlite(data, clock=clock, limits=SeriesLimits(max_connections=2))
    client = create_app(Config(data_dir=str(data)), store=reopened, clock=clock).test_client()
    client.post("/api/v1/jobs", json=job("j3", connection=connection(3), finished_at=FINISHED))
    samples = scrape(client)
    reopened.close()

    assert set(values(samples, "calabi_sync_jobs_total", status="succeeded")) == {
        connection(0),
        connection(1),
        connection(2),
        "__overflow__",
    }


def test_a_real_prometheus_fires_the_cardinality_alert_when_a_job_overflows(
    exporter_process: Callable[..., ExporterProcess], prometheus_for: Callable[..., Prometheus]
) -> None:
    exporter = exporter_process(env={"CALABI_LIMITS__MAX_CONNECTIONS": "1"})
    requests.post(exporter.url + "/api/v1/jobs", json=job("a1", connection="A", finished_at=FINISHED), timeout=10)
    prometheus = prometheus_for(f"127.0.0.1:{exporter.port}", rule_files=[RULES])
    overflowed = 'calabi_exporter_cardinality_overflow_total{kind="connection"}'
    wait_until(lambda: prometheus.scalar(overflowed) == 0, timeout=30, what="the overflow counter at 0")

    requests.post(exporter.url + "/api/v1/jobs", json=job("b1", connection="B", finished_at=FINISHED), timeout=10)

    firing = 'ALERTS{alertname="CalabiExporterCardinalityLimit", alertstate="firing"}'
    wait_until(lambda: bool(prometheus.query(firing)), timeout=60, what="CalabiExporterCardinalityLimit to fire")
    assert prometheus.query(firing)[0]["metric"]["kind"] == "connection"
    assert prometheus.scalar('sum(calabi_sync_jobs_total{status="succeeded"})') == 2
    assert prometheus.scalar('calabi_sync_jobs_total{connection="__overflow__", status="succeeded"}') == 1
