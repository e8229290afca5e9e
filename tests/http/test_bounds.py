"""Values are bounded at the door: nothing that passes validation can make a later request fail."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from calabi_exporter.store import Store
from flask.testing import FlaskClient

from tests.support.jobs import job
from tests.support.samples import Samples

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

MAX_COUNT = 2**53 - 1


@pytest.mark.parametrize("body", [pytest.param([], id="list"), pytest.param({"jobs": []}, id="jobs")])
def test_an_empty_batch_is_a_400_naming_the_jobs(client: FlaskClient, body: object) -> None:
    response = client.post("/api/v1/jobs", json=body)

    assert response.status_code == 400
    assert response.get_json() == {"error": "must hold at least one job record", "field": "jobs"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        pytest.param(
            "finished_at",
            "9999-12-31T23:59:59-01:00",
            "must be between 2000-01-01T00:00:00Z and 2026-04-07T08:00:00Z",
            id="year-10000",
        ),
        pytest.param(
            "finished_at",
            "2026-04-07T08:00:01Z",
            "must be between 2000-01-01T00:00:00Z and 2026-04-07T08:00:00Z",
            id="a-second-past-the-skew",
        ),
        pytest.param(
            "started_at",
            "0095-09-13T00:00:00Z",
            "must be between 2000-01-01T00:00:00Z and 2026-04-07T08:00:00Z",
            id="year-95",
        ),
        pytest.param("created_at", "1999-12-31T23:59:59Z", None, id="before-2000"),
    ],
)
def test_a_time_outside_2000_to_now_plus_the_skew_is_refused_naming_the_field(
    client: FlaskClient, field: str, value: str, message: str | None
) -> None:
    record = job("j1", "succeeded", started_at="2026-04-06T07:00:00Z", finished_at="2026-04-06T07:30:00Z")

    response = client.post("/api/v1/jobs", json={**record, field: value})

    assert response.status_code == 400
    body = response.get_json()
    assert body["field"] == field
    expected = message or "must be between 2000-01-01T00:00:00Z and 2026-04-07T08:00:00Z"
    assert body["error"] == f"{field} {expected}"


def test_the_latest_time_allowed_is_accepted(client: FlaskClient) -> None:
    record = job("j1", "succeeded", started_at="2026-04-07T07:00:00Z", finished_at="2026-04-07T08:00:00Z")

    assert client.post("/api/v1/jobs", json=record).status_code == 200


def test_a_job_finished_before_it_started_is_refused(client: FlaskClient) -> None:
    record = job("j1", "failed", started_at="2026-04-06T08:00:00Z", finished_at="2026-04-06T07:59:59Z")

    response = client.post("/api/v1/jobs", json=record)

    assert response.status_code == 400
    assert response.get_json()["field"] == "finished_at"


def test_a_far_future_finish_is_refused_and_reads_keep_answering(client: FlaskClient) -> None:
    bad = job("j-future", "succeeded", finished_at="9999-12-31T23:59:59-01:00")

    assert client.post("/api/v1/jobs", json=bad).status_code == 400
    assert (
        client.post("/api/v1/jobs", json=job("j1", "succeeded", finished_at="2026-04-06T07:00:00Z")).status_code == 200
    )

    assert client.get("/api/v1/jobs").status_code == 200
    assert client.get("/api/v1/connections").status_code == 200
    assert client.get("/api/v1/jobs/j1").status_code == 200


def test_a_success_dated_in_the_year_9000_cannot_hide_the_failures_after_it(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    assert (
        client.post("/api/v1/jobs", json=job("j0", "succeeded", finished_at="9000-01-01T00:00:00Z")).status_code == 400
    )
    for n in range(5):
        failed = job(f"f{n}", "failed", finished_at=f"2026-04-06T07:0{n}:00Z")
        assert client.post("/api/v1/jobs", json=failed).status_code == 200

    samples = scrape()
    assert samples.value("calabi_sync_consecutive_failures", connection="Salesforce → Snowflake") == 5
    assert samples.value("calabi_sync_last_job_status", connection="Salesforce → Snowflake", status="failed") == 1


def test_counts_up_to_two_to_the_53_add_up_and_larger_ones_are_refused_alone(
    client: FlaskClient, scrape: Callable[[], Samples], store: Store
) -> None:
    batch = [
        job("big-1", records_synced=MAX_COUNT, bytes_synced=MAX_COUNT),
        job("big-2", records_synced=MAX_COUNT, bytes_synced=MAX_COUNT),
        job("huge", records_synced=2**63 - 1),
        job("small", records_synced=7),
    ]

    response = client.post("/api/v1/jobs", json={"jobs": batch})

    assert response.status_code == 200
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (3, 1)
    assert body["errors"] == [
        {
            "index": 2,
            "field": "records_synced",
            "job_id": "huge",
            "error": f"records_synced must be an integer from 0 to {MAX_COUNT}",
        }
    ]
    total = scrape().value("calabi_sync_records_synced_total", connection="Salesforce → Snowflake")
    assert total == float(2 * MAX_COUNT + 7)
    assert client.post("/api/v1/jobs", json=job("later", records_synced=1)).status_code == 200
    assert store.reads.job("huge") is None


def test_totals_saturate_rather_than_fail_a_batch(client: FlaskClient, scrape: Callable[[], Samples]) -> None:
    # 1,100 jobs at the largest count sum past what the store holds (2^63 - 1).
    batch = [job(f"max-{n}", records_synced=MAX_COUNT) for n in range(1100)]

    response = client.post("/api/v1/jobs", json={"jobs": batch})

    assert response.status_code == 200
    assert response.get_json()["accepted"] == 1100
    assert scrape().value("calabi_sync_records_synced_total", connection="Salesforce → Snowflake") == float(2**63 - 1)
    assert client.post("/api/v1/jobs", json=job("one-more", records_synced=MAX_COUNT)).status_code == 200


def test_a_log_line_past_the_skew_is_refused_naming_the_line(client: FlaskClient) -> None:
    assert client.post("/api/v1/jobs", json=job("j1", "running")).status_code == 200
    body = "2026-04-06T08:00:01Z INFO fine\n9999-01-01T00:00:00Z INFO from the future\n"

    response = client.post("/api/v1/jobs/j1/logs", data=body, content_type="text/plain")

    assert response.status_code == 400
    assert response.get_json()["field"] == "line 2.timestamp"


def test_a_stream_line_with_an_unbelievable_count_does_not_fail_its_job(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    assert client.post("/api/v1/jobs", json=job("j1", "running")).status_code == 200
    body = "INFO Stream Account: 99999999999999999999999 records synced in 1s\nINFO Stream Contact: 5 records synced\n"
    assert client.post("/api/v1/jobs/j1/logs", data=body, content_type="text/plain").status_code == 200

    response = client.post("/api/v1/jobs", json=job("j1", "succeeded", finished_at="2026-04-06T08:00:00Z"))

    assert response.status_code == 200
    assert scrape().value("calabi_sync_records_synced_total", connection="Salesforce → Snowflake") == 5


def test_a_far_future_time_stored_before_the_bounds_still_reads(client: FlaskClient, store: Store) -> None:
    from dataclasses import replace

    from calabi_exporter.model import parse_job

    stored = replace(parse_job(job("old-poison", "succeeded")), finished_at=253_402_304_399.0)  # year 10000
    store.ingest.jobs([stored], endpoint="jobs")

    listing = client.get("/api/v1/jobs")
    one = client.get("/api/v1/jobs/old-poison")

    assert (listing.status_code, one.status_code) == (200, 200)
    assert one.get_json()["finished_at"] == "9999-12-31T23:59:59Z"
    assert client.get("/api/v1/connections").status_code == 200
