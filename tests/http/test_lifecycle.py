"""Job lifecycle rules end to end: through HTTP, a store on each backend and a scrape.

The rules themselves (merging, streaks, latest job, streams) are tested without
Flask or a database in test_ingest_plan.py; these check that the store applies
them and that the metrics show them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from calabi_exporter.store import Store
from flask.testing import FlaskClient

from tests.support.clock import FakeClock
from tests.support.jobs import job
from tests.support.samples import Samples

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

SF = "Salesforce → Snowflake"
STRIPE = "Stripe → Postgres"


def post(client: FlaskClient, *records: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", json={"jobs": list(records)})
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


BATCH = [
    job(
        "j1",
        started_at="2026-04-06T08:00:00Z",
        finished_at="2026-04-06T08:01:42Z",
        streams=[
            {"name": "Account", "status": "succeeded", "records_synced": 4218, "bytes_synced": 1_000_000},
            {"name": "Contact", "status": "succeeded", "records_synced": 8629, "bytes_synced": 2_200_000},
        ],
    ),
    job("j2", "failed", started_at="2026-04-06T09:00:00Z", failed_at="2026-04-06T09:03:16Z", records_failed=7),
    job("j3", "running", connection=STRIPE, started_at="2026-04-06T09:30:00Z"),
    job("j4", "pending", connection=STRIPE, created_at="2026-04-06T09:31:00Z"),
    job("j5", "cancelled", connection=STRIPE, started_at="2026-04-06T07:00:00Z", finished_at="2026-04-06T07:00:30Z"),
]


def test_a_batch_posted_three_times_gives_the_same_metrics_as_once(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    first = post(client, *BATCH)
    once = scrape()

    second = post(client, *BATCH)
    third = post(client, *BATCH)
    thrice = scrape()

    assert first["accepted"] == 5
    assert second["unchanged"] == third["unchanged"] == 5
    # The exporter's own bookkeeping (records received, the store's size on disk) moves; nothing else.
    own = ("calabi_exporter_ingested", "calabi_exporter_store_size")
    without_ingest = {k: v for k, v in once.store_samples().items() if not k[0].startswith(own)}
    assert without_ingest == {k: v for k, v in thrice.store_samples().items() if not k[0].startswith(own)}
    assert thrice.value("calabi_exporter_ingested_records_total", endpoint="jobs", outcome="unchanged") == 10
    assert once.value("calabi_sync_jobs_total", connection=SF, status="succeeded") == 1
    assert once.value("calabi_sync_records_synced_total", connection=SF) == 12847
    assert once.value("calabi_sync_bytes_synced_total", connection=SF) == 3_200_000
    assert once.value("calabi_sync_records_failed_total", connection=SF) == 7
    assert once.value("calabi_sync_jobs_in_progress", connection=STRIPE, status="running") == 1
    assert once.value("calabi_sync_jobs_in_progress", connection=STRIPE, status="pending") == 1
    assert once.value("calabi_exporter_stored_jobs") == 5


def test_a_late_running_for_a_succeeded_job_is_ignored_and_counted_once(
    client: FlaskClient, scrape: Callable[[], Samples], store: Store
) -> None:
    post(client, job("j1", finished_at="2026-04-06T08:01:42Z", records_synced=100))

    report = post(client, job("j1", "running", started_at="2026-04-06T08:00:00Z"))

    samples = scrape()
    assert report["ignored"] == 1
    stored = store.reads.job("j1")
    assert stored is not None and stored.status == "succeeded"
    assert samples.value("calabi_sync_jobs_total", connection=SF, status="succeeded") == 1
    assert samples.value("calabi_sync_records_synced_total", connection=SF) == 100
    assert samples.value("calabi_sync_jobs_in_progress", connection=SF, status="running") == 0
    assert samples.value("calabi_exporter_ingested_records_total", endpoint="jobs", outcome="ignored") == 1


def test_a_job_moves_pending_running_succeeded_and_is_counted_once_at_the_end(
    client: FlaskClient, scrape: Callable[[], Samples], clock: FakeClock
) -> None:
    post(client, job("j1", "pending", created_at="2026-04-06T07:59:00Z"))
    pending = scrape()
    post(client, job("j1", "running", started_at="2026-04-06T08:00:00Z"))
    running = scrape()
    post(client, job("j1", "succeeded", finished_at="2026-04-06T08:01:40Z", records_synced=12))
    done = scrape()

    assert pending.value("calabi_sync_jobs_in_progress", connection=SF, status="pending") == 1
    assert pending.value("calabi_sync_oldest_job_start_timestamp_seconds", connection=SF, status="pending") == (
        1775462340.0
    )
    assert running.value("calabi_sync_jobs_in_progress", connection=SF, status="pending") == 0
    assert running.value("calabi_sync_jobs_in_progress", connection=SF, status="running") == 1
    assert running.value("calabi_sync_oldest_job_start_timestamp_seconds", connection=SF, status="running") == (
        1775462400.0
    )
    assert running.value("calabi_sync_jobs_total", connection=SF, status="succeeded") == 0
    assert done.value("calabi_sync_jobs_in_progress", connection=SF, status="running") == 0
    assert done.get_value("calabi_sync_oldest_job_start_timestamp_seconds", connection=SF, status="running") is None
    assert done.value("calabi_sync_jobs_total", connection=SF, status="succeeded") == 1
    assert done.value("calabi_sync_job_duration_seconds_sum", connection=SF, status="succeeded") == 100
    assert done.value("calabi_sync_job_duration_seconds_bucket", connection=SF, status="succeeded", le="60") == 0
    assert done.value("calabi_sync_job_duration_seconds_bucket", connection=SF, status="succeeded", le="300") == 1
    assert done.value("calabi_sync_last_job_duration_seconds", connection=SF) == 100


def test_a_late_success_between_failures_leaves_only_the_later_failures_in_the_streak(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    # Kept at the store level: the failures stored before the success are counted by the store's query.
    post(client, job("f1", "failed", failed_at="2026-04-06T08:00:00Z"))
    post(client, job("f2", "failed", failed_at="2026-04-06T09:00:00Z"))
    post(client, job("f3", "failed", failed_at="2026-04-06T10:00:00Z"))
    post(client, job("s1", "succeeded", finished_at="2026-04-06T08:30:00Z"))

    samples = scrape()
    assert samples.value("calabi_sync_consecutive_failures", connection=SF) == 2
    assert samples.value("calabi_sync_last_job_status", connection=SF, status="failed") == 1


def test_the_webhook_alone_creates_the_job_and_the_full_record_later_fills_its_summary_once(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    payload = {
        "connection_name": SF,
        "job_id": "job_01HX4M9QZPKR",
        "status": "failed",
        "started_at": "2026-04-06T08:00:01Z",
        "failed_at": "2026-04-06T08:03:17Z",
        "error_summary": "Stream Account: 401 Unauthorized — token expired",
        "job_url": "https://app.calabi.io/connect/jobs/job_01HX4M9QZPKR",
    }
    hook = client.post("/webhooks/calabi", json=payload)
    after_hook = scrape()
    full = post(
        client,
        job(
            "job_01HX4M9QZPKR",
            "failed",
            streams=[
                {"name": "Account", "status": "failed", "records_synced": 0, "error": "401"},
                {"name": "Contact", "status": "succeeded", "records_synced": 80},
            ],
        ),
    )
    again = client.post("/webhooks/calabi", json=payload)
    after_full = scrape()

    assert hook.status_code == 200 and hook.get_json()["outcome"] == "accepted"
    assert after_hook.value("calabi_sync_jobs_total", connection=SF, status="failed") == 1
    assert after_hook.value("calabi_sync_job_duration_seconds_sum", connection=SF, status="failed") == 196
    assert after_hook.value("calabi_sync_last_failure_timestamp_seconds", connection=SF) == 1775462597.0
    assert full["accepted"] == 1
    assert again.get_json()["outcome"] == "unchanged"
    assert after_full.value("calabi_sync_jobs_total", connection=SF, status="failed") == 1
    assert after_full.value("calabi_sync_job_duration_seconds_count", connection=SF, status="failed") == 1
    assert after_full.value("calabi_sync_records_synced_total", connection=SF) == 80
    assert after_full.value("calabi_sync_streams_total", connection=SF, status="failed") == 1
    assert after_full.value("calabi_sync_streams_total", connection=SF, status="succeeded") == 1
    assert after_full.value("calabi_sync_last_job_streams_failed", connection=SF) == 1
    assert after_full.value("calabi_sync_last_job_streams_succeeded", connection=SF) == 1
    assert after_full.value("calabi_sync_stream_last_status", connection=SF, stream="Account", status="failed") == 1


def test_a_webhook_with_a_field_the_product_added_later_is_still_accepted(client: FlaskClient) -> None:
    response = client.post(
        "/webhooks/calabi", json={"connection_name": SF, "job_id": "j9", "status": "Succeeded", "region": "eu"}
    )

    assert response.status_code == 200
    assert response.get_json()["outcome"] == "accepted"
