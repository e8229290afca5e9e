"""The series budget: connections and streams beyond it add up under ``__overflow__``, sums stay exact."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from calabi_exporter.config import Config, ConnectionSettings
from calabi_exporter.model import OVERFLOW
from calabi_exporter.purger import Purger
from calabi_exporter.store import SeriesLimits, Store
from calabi_exporter.web import create_app
from flask import Flask
from flask.testing import FlaskClient

from tests.support.clock import FakeClock
from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job
from tests.support.paths import RULE_FILES
from tests.support.prometheus_server import Prometheus
from tests.support.samples import Samples, parse_samples
from tests.support.waiting import wait_until

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

CONNECTIONS = 12_000
BUDGET = 10_000  # the default limits.max_connections
FINISHED = "2026-04-06T08:03:17Z"


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
    app = create_app(Config(data_dir=str(data), limits_new_connections_per_hour=0), clock=FakeClock())
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
        "DROP INDEX connections_waiting;"
        " ALTER TABLE connections DROP COLUMN admitted; ALTER TABLE connections DROP COLUMN version;"
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


TOKEN, OTHER = "budget-token-0123456789", "other-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEEK = 7 * 86400


def gauge(samples: Samples, name: str, connection: str | None = None) -> float | None:
    """One sample of ``name`` (of ``connection``, else the one without labels), or None when absent."""
    return samples.get((name, frozenset({("connection", connection)} if connection else set())))


def test_junk_that_fills_the_budget_ages_out_and_the_waiting_connection_gets_its_place(
    open_app: Callable[..., Flask], clock: FakeClock
) -> None:
    app = open_app(limits_max_connections=3, ingest_tokens=(TOKEN,))
    client = app.test_client()
    junk = [job(f"junk-{n}", "pending", connection=f"junk-{n}") for n in range(3)]
    assert client.post("/api/v1/jobs", json=junk, headers=AUTH).status_code == 200
    for n in range(2):
        failed = job(f"sf{n}", "failed", finished_at=f"2026-04-06T08:0{n}:00Z", records_synced=4)
        client.post("/api/v1/jobs", json=failed, headers=AUTH)
    waiting = scrape(client)

    clock.advance(WEEK + 1)  # a week without news of the junk
    services = app.extensions["calabi_exporter"]
    Purger(services.store, services.config, clock=clock).purge_once()
    samples = scrape(client)

    assert "Salesforce → Snowflake" not in values(waiting, "calabi_sync_consecutive_failures")
    assert gauge(waiting, "calabi_sync_overflow_connections_failing") == 1  # still alerting from overflow
    assert values(samples, "calabi_sync_consecutive_failures") == {"Salesforce → Snowflake": 2}
    assert values(samples, "calabi_sync_records_synced_total") == {"Salesforce → Snowflake": 0, "__overflow__": 8}
    assert gauge(samples, "calabi_sync_overflow_connections_failing") == 0
    assert client.get("/api/v1/jobs/junk-0", headers=AUTH).status_code == 404


def test_deleting_the_junk_gives_its_place_to_the_connection_that_waited(open_app: Callable[..., Flask]) -> None:
    client = open_app(limits_max_connections=1, ingest_tokens=(TOKEN,)).test_client()
    client.post("/api/v1/jobs", json=job("junk", "pending", connection="junk"), headers=AUTH)
    client.post("/api/v1/jobs", json=job("sf1", "failed", finished_at=FINISHED), headers=AUTH)

    client.delete("/api/v1/connections/junk", headers=AUTH)
    samples = scrape(client)

    assert values(samples, "calabi_sync_consecutive_failures") == {"Salesforce → Snowflake": 1}
    pending = values(samples, "calabi_sync_jobs_in_progress", status="pending")
    assert pending == {"junk": 1, "Salesforce → Snowflake": 0, OVERFLOW: 0}  # junk's job shows until it ages out


@pytest.mark.parametrize(
    ("path", "headers", "record"),
    [
        pytest.param("/api/v1/jobs", AUTH, job, id="api"),
        pytest.param(f"/webhooks/calabi?token={TOKEN}", {}, job, id="webhook URL token"),
    ],
)
def test_a_token_makes_only_so_many_new_connections_an_hour_through_every_way_in(
    open_app: Callable[..., Flask],
    clock: FakeClock,
    path: str,
    headers: dict[str, str],
    record: Callable[..., dict[str, object]],
) -> None:
    client = open_app(limits_new_connections_per_hour=2, ingest_tokens=(TOKEN, OTHER)).test_client()
    client.post("/api/v1/jobs", json=job("a1", connection="A", finished_at=FINISHED), headers=AUTH)
    client.post(f"/webhooks/calabi?token={TOKEN}", json=job("b1", connection="B", finished_at=FINISHED))

    refused = client.post(path, json=record("c1", connection="C", finished_at=FINISHED), headers=headers)
    known = client.post(path, json=record("a2", connection="A", finished_at=FINISHED), headers=headers)
    other = client.post(
        "/api/v1/jobs",
        json=job("c1", connection="C", finished_at=FINISHED),
        headers={"Authorization": f"Bearer {OTHER}"},
    )
    clock.advance(3600)
    next_hour = client.post(path, json=record("d1", connection="D", finished_at=FINISHED), headers=headers)

    assert (refused.status_code, refused.headers["Retry-After"]) == (429, "3600")  # T0 is on the hour
    assert refused.get_json()["field"] == "connection_name"
    assert refused.get_json()["errors"][0]["field"] == "connection_name"
    assert [known.status_code, other.status_code, next_hour.status_code] == [200, 200, 200]
    assert client.get("/api/v1/jobs/c1", headers=AUTH).get_json()["connection_name"] == "C"


def test_a_batch_keeps_the_records_within_the_new_connection_limit(open_app: Callable[..., Flask]) -> None:
    client = open_app(limits_new_connections_per_hour=2).test_client()
    records = [job(f"j{n}", connection=f"c{n}", finished_at=FINISHED) for n in range(3)]

    response = client.post("/api/v1/jobs", json={"jobs": [*records, job("j9", connection="c0", finished_at=FINISHED)]})
    samples = scrape(client)

    assert response.status_code == 200
    assert (response.get_json()["accepted"], response.get_json()["rejected"]) == (3, 1)
    assert [(e["index"], e["field"]) for e in response.get_json()["errors"]] == [(2, "connection_name")]
    assert set(values(samples, "calabi_sync_jobs_total", status="succeeded")) == {"c0", "c1"}
    assert (
        samples[
            ("calabi_exporter_rejected_records_total", frozenset({("endpoint", "jobs"), ("field", "connection_name")}))
        ]
        == 1
    )


def test_connections_in_overflow_still_alert_by_their_own_thresholds(
    open_app: Callable[..., Flask], clock: FakeClock
) -> None:
    client = open_app(
        limits_max_connections=1,
        connections={
            "C": ConnectionSettings(failure_threshold=3),
            "D": ConnectionSettings(freshness_threshold_seconds=60),
        },
    ).test_client()
    client.post("/api/v1/jobs", json=job("a1", connection="A", finished_at=FINISHED))
    for n in range(2):  # B and C fail twice: B reaches the default threshold (2), C not its own (3)
        for name in ("B", "C"):
            client.post("/api/v1/jobs", json=job(f"{name}{n}", "failed", connection=name, finished_at=FINISHED))
    client.post("/api/v1/jobs", json=job("d1", "running", connection="D"))  # never succeeded: stale after 60 s
    client.post("/api/v1/jobs", json=job("e1", "pending", connection="E"))
    clock.advance(120)

    samples = scrape(client)

    assert gauge(samples, "calabi_sync_overflow_connections_failing") == 1
    assert gauge(samples, "calabi_sync_overflow_connections_stale") == 1
    assert gauge(samples, "calabi_sync_pending_threshold_seconds", OVERFLOW) == 1800  # CalabiSyncPendingTooLong
    assert gauge(samples, "calabi_sync_stuck_floor_seconds", OVERFLOW) == 3600  # CalabiSyncJobStuck
    assert gauge(samples, "calabi_sync_jobs_in_progress", OVERFLOW) is None
    assert values(samples, "calabi_sync_jobs_in_progress", status="pending") == {"A": 0, OVERFLOW: 1}


def test_a_real_prometheus_fires_the_cardinality_alert_and_the_overflowed_connections_failures_page(
    exporter_process: Callable[..., ExporterProcess], prometheus_for: Callable[..., Prometheus]
) -> None:
    exporter = exporter_process(env={"CALABI_LIMITS__MAX_CONNECTIONS": "1"})
    requests.post(exporter.url + "/api/v1/jobs", json=job("a1", connection="A", finished_at=FINISHED), timeout=10)
    prometheus = prometheus_for(f"127.0.0.1:{exporter.port}", rule_files=RULE_FILES)
    overflowed = 'calabi_exporter_cardinality_overflow_total{kind="connection"}'
    wait_until(lambda: prometheus.scalar(overflowed) == 0, timeout=30, what="the overflow counter at 0")

    requests.post(exporter.url + "/api/v1/jobs", json=job("b1", connection="B", finished_at=FINISHED), timeout=10)

    firing = 'ALERTS{alertname="CalabiExporterCardinalityLimit", alertstate="firing"}'
    wait_until(lambda: bool(prometheus.query(firing)), timeout=60, what="CalabiExporterCardinalityLimit to fire")
    assert prometheus.query(firing)[0]["metric"]["kind"] == "connection"
    assert prometheus.scalar('sum(calabi_sync_jobs_total{status="succeeded"})') == 2
    assert prometheus.scalar('calabi_sync_jobs_total{connection="__overflow__", status="succeeded"}') == 1

    failures = [job(f"b{n}", "failed", connection="B", finished_at=f"2026-04-06T09:0{n}:00Z") for n in (2, 3)]
    requests.post(exporter.url + "/api/v1/jobs", json=failures, timeout=10)

    paging = 'ALERTS{alertname="CalabiSyncOverflowConnectionsFailing", alertstate="firing"}'
    wait_until(lambda: bool(prometheus.query(paging)), timeout=60, what="CalabiSyncOverflowConnectionsFailing to fire")
    assert prometheus.query(paging)[0]["metric"]["connection"] == OVERFLOW
    assert prometheus.query(paging)[0]["metric"]["severity"] == "critical"
