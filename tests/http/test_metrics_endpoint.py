"""What /metrics shows, in which format, and the health endpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from calabi_exporter.collector import SyncJobCollector, Thresholds
from calabi_exporter.config import Config, ConnectionSettings
from calabi_exporter.scrape import ScrapeRenderer
from calabi_exporter.store import Store
from calabi_exporter.timeutil import format_rfc3339
from calabi_exporter.web import create_app
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tests.support.clock import T0, FakeClock
from tests.support.faults import writes_refused
from tests.support.jobs import job
from tests.support.samples import Samples, parse_samples

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

SF = "Salesforce → Snowflake"


def _fill(store: Store) -> None:
    store.ingest.jobs([], endpoint="jobs")
    from calabi_exporter.model import parse_job

    records = [
        job(
            f"j{i}",
            ["succeeded", "failed", "cancelled"][i % 3],
            connection=f'Conn "{i % 4}" \\ new\nline → ✓',
            started_at="2026-04-06T08:00:00Z",
            finished_at=f"2026-04-06T08:{i:02d}:30Z",
            error_summary='quote " and backslash \\',
            streams=[{"name": f"s{k}", "status": "succeeded", "records_synced": i * k} for k in range(3)],
        )
        for i in range(30)
    ]
    store.ingest.jobs([parse_job(r) for r in records], endpoint="jobs")


def test_the_fast_text_rendering_is_byte_for_byte_what_prometheus_client_writes(store: Store) -> None:
    _fill(store)
    collector = SyncJobCollector(store.metrics.snapshot, Thresholds.from_config(Config()))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    body = ScrapeRenderer(collector.settings, store.metrics.versions, store.metrics.snapshot).body()
    ours = body[: body.rindex(b"# HELP calabi_exporter_series ")]

    assert ours == generate_latest(registry)
    assert b'connection="Conn \\"1\\" \\\\ new\\nline \xe2\x86\x92 \xe2\x9c\x93"' in ours


def test_openmetrics_is_served_when_the_scraper_asks_for_it(client: FlaskClient) -> None:
    client.post("/api/v1/jobs", json=job("j1", records_synced=4))

    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    assert response.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    families = {f.name: f for f in parse_openmetrics(response.get_data(as_text=True))}
    assert families["calabi_sync_records_synced"].samples[0].value == 4
    assert families["calabi_sync_records_synced"].type == "counter"


def test_plain_scrapes_get_the_prometheus_text_format(client: FlaskClient) -> None:
    response = client.get("/metrics")

    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_all_finished_statuses_are_precreated_at_zero(client: FlaskClient, scrape: Callable[[], Samples]) -> None:
    client.post("/api/v1/jobs", json=job("j1", "running"))

    samples = scrape()
    assert samples.family("calabi_sync_jobs_total") == {
        frozenset({("connection", SF), ("status", "succeeded")}): 0,
        frozenset({("connection", SF), ("status", "failed")}): 0,
        frozenset({("connection", SF), ("status", "cancelled")}): 0,
    }
    assert samples.value("calabi_sync_consecutive_failures", connection=SF) == 0
    assert samples.get_value("calabi_sync_last_success_timestamp_seconds", connection=SF) is None
    assert samples.family("calabi_sync_last_job_info") == {}


def test_thresholds_come_from_the_config_with_per_connection_overrides(tmp_path: Path, clock: FakeClock) -> None:
    config = Config(
        data_dir=str(tmp_path),
        failure_threshold=3,
        pending_threshold_seconds=600,
        connections={
            SF: ConnectionSettings(failure_threshold=5, freshness_threshold_seconds=3600, stuck_floor_seconds=7200)
        },
    )
    client = create_app(config, clock=clock).test_client()
    client.post("/api/v1/jobs", json={"jobs": [job("a"), job("b", connection="Stripe → Postgres")]})

    samples = parse_samples(client.get("/metrics").get_data(as_text=True))
    assert samples.value("calabi_sync_failure_threshold", connection=SF) == 5
    assert samples.value("calabi_sync_freshness_threshold_seconds", connection=SF) == 3600
    assert samples.value("calabi_sync_failure_threshold", connection="Stripe → Postgres") == 3
    assert samples.value("calabi_sync_freshness_threshold_seconds", connection="Stripe → Postgres") == 259200
    assert samples.value("calabi_sync_stuck_floor_seconds", connection=SF) == 7200
    assert samples.value("calabi_sync_stuck_floor_seconds", connection="Stripe → Postgres") == 3600
    assert samples.value("calabi_sync_pending_threshold_seconds", connection=SF) == 600
    assert samples.value("calabi_sync_pending_threshold_seconds", connection="Stripe → Postgres") == 600


def test_connection_info_carries_the_latest_metadata(client: FlaskClient, scrape: Callable[[], Samples]) -> None:
    client.post("/api/v1/jobs", json=job("a", connection_id="conn_1", source="Salesforce", destination="Snowflake"))

    assert scrape().family("calabi_sync_connection_info") == {
        frozenset(
            {
                ("connection", SF),
                ("connection_id", "conn_1"),
                ("source", "Salesforce"),
                ("destination", "Snowflake"),
                ("platform", "calabi"),
            }
        ): 1
    }


def test_the_latest_job_summary_gauges_show_the_summary_of_the_latest_job(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    client.post(
        "/api/v1/jobs",
        json=job(
            "job_01",
            started_at="2026-04-06T08:00:00Z",
            finished_at="2026-04-06T08:01:42Z",
            records_synced=12847,
            records_failed=0,
            bytes_synced=3_200_000,
            job_url="https://app.calabi.io/connect/jobs/job_01",
            streams=[{"name": f"s{i}", "status": "succeeded"} for i in range(14)],
        ),
    )

    samples = scrape()
    assert samples.value("calabi_sync_last_job_records_synced", connection=SF) == 12847
    assert samples.value("calabi_sync_last_job_records_failed", connection=SF) == 0
    assert samples.value("calabi_sync_last_job_bytes_synced", connection=SF) == 3_200_000
    assert samples.value("calabi_sync_last_job_duration_seconds", connection=SF) == 102
    assert samples.value("calabi_sync_last_job_streams_succeeded", connection=SF) == 14
    assert samples.value("calabi_sync_last_job_streams_failed", connection=SF) == 0
    assert samples.value("calabi_sync_streams_total", connection=SF, status="succeeded") == 14
    assert (
        samples.value(
            "calabi_sync_last_job_info",
            connection=SF,
            job_id="job_01",
            status="succeeded",
            error_summary="",
            job_url="https://app.calabi.io/connect/jobs/job_01",
        )
        == 1
    )


def test_build_info_names_the_version(scrape: Callable[[], Samples]) -> None:
    from calabi_exporter import __version__

    assert scrape().value("calabi_exporter_build_info", version=__version__) == 1


def test_healthz_and_readyz_answer_ok(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_readyz_fails_when_the_store_cannot_be_written(client: FlaskClient, store: Store) -> None:
    with writes_refused(store):
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"


def test_a_store_failure_during_ingest_is_a_503_not_a_500(client: FlaskClient, store: Store) -> None:
    with writes_refused(store):
        response = client.post("/api/v1/jobs", json=job("a"))

    assert response.status_code == 503
    assert store.reads.job("a") is None


def test_a_connection_keeps_the_time_it_was_first_seen(
    client: FlaskClient, clock: FakeClock, scrape: Callable[[], Samples]
) -> None:
    assert client.post("/api/v1/jobs", json=job("a", "running")).status_code == 200
    clock.advance(3600)
    assert client.post("/api/v1/jobs", json=job("b", "failed")).status_code == 200

    first_seen = scrape().value(
        "calabi_sync_connection_first_seen_timestamp_seconds", connection="Salesforce → Snowflake"
    )
    assert first_seen == T0


def test_history_of_a_connection_that_never_succeeded_is_stale_from_its_first_job(
    client: FlaskClient, clock: FakeClock, scrape: Callable[[], Samples]
) -> None:
    five_days_ago = T0 - 5 * 86400
    history = [
        job(
            f"h{n}",
            "failed",
            created_at=format_rfc3339(five_days_ago + n * 3600),
            finished_at=format_rfc3339(five_days_ago + n * 3600 + 60),
        )
        for n in range(3)
    ]
    assert client.post("/api/v1/jobs", json={"jobs": history[1:]}).status_code == 200
    assert client.post("/api/v1/jobs", json=history[0]).status_code == 200

    first_seen = scrape().value(
        "calabi_sync_connection_first_seen_timestamp_seconds", connection="Salesforce → Snowflake"
    )
    assert first_seen == five_days_ago
    stale = client.get("/api/v1/connections?stale_for=3d").get_json()["connections"]
    assert [(c["connection_name"], c["first_seen"]) for c in stale] == [
        ("Salesforce → Snowflake", format_rfc3339(five_days_ago))
    ]
