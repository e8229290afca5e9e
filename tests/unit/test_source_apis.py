"""What the pollers make of the vendors' API answers: Airbyte's jobs and Fivetran's connections as job records.

The items follow the vendors' documents: Airbyte's ``JobResponse`` (airbytehq/airbyte-platform
``api.yaml`` @ 310e6cb6; its times as ``OffsetDateTime.toString()`` writes them, seconds left out
when zero, JobResponseMapper.kt) and Fivetran's connection of go-fivetran's
``connections_list_test.go`` fixture (@ 74cb73c7), whose times Fivetran also sends as null.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from calabi_exporter.model import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, ValidationError
from calabi_exporter.sources import ConnectionState, airbyte_api, fivetran_api
from calabi_exporter.timeutil import parse_rfc3339

from tests.support.clock import T0
from tests.support.paths import DATA

LATEST = T0


def airbyte_job(**changes: Any) -> dict[str, Any]:
    return {
        "jobId": 9001,
        "status": "succeeded",
        "jobType": "sync",
        "startTime": "2026-04-06T07:00Z",
        "connectionId": "9924bcd0-99be-453d-ba47-c2c9766f7da5",
        "lastUpdatedAt": "2026-04-06T07:08:12Z",
        "duration": "PT8M12S",
        "bytesSynced": 281_000,
        "rowsSynced": 1400,
    } | changes


def test_an_airbyte_job_becomes_the_record_it_describes_under_the_connection_s_name() -> None:
    job = airbyte_api.job_of(airbyte_job(), "Stripe → Snowflake", latest=LATEST)

    assert (job.job_id, job.connection_name, job.connection_id, job.status, job.platform, job.job_type) == (
        "airbyte:9001",
        "Stripe → Snowflake",
        "9924bcd0-99be-453d-ba47-c2c9766f7da5",
        SUCCEEDED,
        "airbyte",
        "sync",
    )
    assert (job.created_at, job.finished_at, job.duration_seconds) == (
        parse_rfc3339("2026-04-06T07:00:00Z"),
        parse_rfc3339("2026-04-06T07:08:12Z"),
        492.0,
    )
    assert (job.records_synced, job.bytes_synced) == (1400, 281_000)


@pytest.mark.parametrize(
    ("airbyte_status", "status"),
    [
        ("pending", PENDING),
        ("queued", PENDING),
        ("running", RUNNING),
        ("incomplete", RUNNING),
        ("failed", FAILED),
        ("cancelled", CANCELLED),
    ],
)
def test_each_airbyte_job_status_is_the_project_s(airbyte_status: str, status: str) -> None:
    item = airbyte_job(status=airbyte_status)
    if status in (PENDING, RUNNING):
        item = {k: v for k, v in item.items() if k not in ("lastUpdatedAt", "duration")}

    job = airbyte_api.job_of(item, "orders", latest=LATEST)

    assert job.status == status
    assert (job.finished_at is None) == (status in (PENDING, RUNNING))


def test_a_job_still_running_has_no_finish_nor_duration_whatever_the_api_says_so_far() -> None:
    job = airbyte_api.job_of(airbyte_job(status="running", lastUpdatedAt=None, duration="PT1M"), "o", latest=LATEST)

    assert (job.finished_at, job.duration_seconds) == (None, None)


@pytest.mark.parametrize(
    ("period", "seconds"), [("PT8H6M12S", 29172.0), ("P1DT2H", 93600.0), ("PT0.5S", 0.5), ("PT45M", 2700.0)]
)
def test_airbyte_s_durations_are_read_as_iso_8601_periods(period: str, seconds: float) -> None:
    assert airbyte_api.period_seconds(period) == seconds


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (airbyte_job(jobId="9001"), "jobId"),
        (airbyte_job(status="exploded"), "status"),
        (airbyte_job(status=["succeeded"]), "status"),
        (airbyte_job(duration="8 minutes"), "duration"),
        (airbyte_job(startTime="yesterday"), "startTime"),
        (airbyte_job(rowsSynced=-1), "rowsSynced"),
    ],
)
def test_an_airbyte_job_not_as_documented_is_refused_naming_the_api_s_field(item: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        airbyte_api.job_of(item, "orders", latest=LATEST)

    assert refused.value.field == field


def test_an_airbyte_page_is_its_data_and_anything_else_is_not_a_page() -> None:
    assert airbyte_api.page_items({"data": [], "next": "", "previous": ""}) == []
    with pytest.raises(ValidationError) as refused:
        airbyte_api.page_items({"jobs": []})
    assert refused.value.field == "data"


def connection(**changes: Any) -> dict[str, Any]:
    return {
        "id": "connection_id",
        "service": "google_sheets",
        "schema": "gsheets.table",
        "paused": False,
        "status": {
            "tasks": [{"code": "resync_table_warning", "message": "Resync Table Warning", "details": "string"}],
            "setup_state": "connected",
            "sync_state": "scheduled",
            "update_state": "delayed",
            "is_historical_sync": False,
        },
        "succeeded_at": "2026-04-06T06:00:00.013729Z",
        "failed_at": "2026-04-06T07:00:00Z",
        "sync_frequency": 360,
    } | changes


def test_a_fivetran_connection_s_last_success_and_failure_are_two_jobs_oldest_first() -> None:
    success, failure = fivetran_api.jobs_of(connection(), fivetran_api.Seen(), latest=LATEST)

    assert (success.job_id, success.status, success.finished_at, success.connection_name, success.source) == (
        "fivetran:connection_id:2026-04-06T06:00:00.013729Z",
        SUCCEEDED,
        parse_rfc3339("2026-04-06T06:00:00.013729Z"),
        "gsheets.table",
        "google_sheets",
    )
    assert (failure.job_id, failure.status, failure.error_summary, failure.platform) == (
        "fivetran:connection_id:2026-04-06T07:00:00Z",
        FAILED,
        "resync_table_warning: Resync Table Warning",
        "fivetran",
    )


def test_only_the_times_newer_than_what_was_seen_are_jobs_and_null_times_none() -> None:
    seen = fivetran_api.Seen(parse_rfc3339("2026-04-06T06:00:00.013729Z"), None)

    (failure,) = fivetran_api.jobs_of(connection(), seen, latest=LATEST)
    assert failure.status == FAILED
    assert fivetran_api.jobs_of(connection(succeeded_at=None, failed_at=None), seen, latest=LATEST) == []
    assert fivetran_api.seen_now(connection(succeeded_at=None), seen) == fivetran_api.Seen(
        seen.succeeded_at, parse_rfc3339("2026-04-06T07:00:00Z")
    )


def test_a_failure_without_tasks_says_that_fivetran_reported_it() -> None:
    item = connection(status={"tasks": []}, succeeded_at=None)

    (failure,) = fivetran_api.jobs_of(item, fivetran_api.Seen(), latest=LATEST)

    assert failure.error_summary == "Fivetran: the sync failed"


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (connection(id=None), "id"),
        (connection(schema=""), "schema"),
        (connection(succeeded_at="yesterday"), "succeeded_at"),
        (connection(failed_at=1775458800), "failed_at"),
    ],
)
def test_a_fivetran_connection_not_as_documented_is_refused_naming_the_api_s_field(
    item: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        fivetran_api.jobs_of(item, fivetran_api.Seen(), latest=LATEST)

    assert refused.value.field == field


def test_a_fivetran_page_gives_its_connections_and_the_next_cursor_none_on_the_last() -> None:
    assert fivetran_api.page({"data": {"items": [1], "next_cursor": "eyJ"}}) == ([1], "eyJ")
    assert fivetran_api.page({"data": {"items": []}}) == ([], None)
    with pytest.raises(ValidationError) as refused:
        fivetran_api.page({"data": {"connections": []}})
    assert refused.value.field == "data.items"


def test_what_a_fivetran_connection_reports_of_itself_is_its_state() -> None:
    state = fivetran_api.state_of(connection(paused=True, sync_frequency=360))

    assert state == ConnectionState(
        "gsheets.table", {"setup": "connected", "sync": "scheduled", "update": "delayed"}, True, 21600.0
    )


@pytest.mark.parametrize(
    ("frequency", "seconds"),
    [(360, 21600.0), ("1440", 86400.0), (None, None), ("custom", None), (0, None), (True, None)],
)
def test_the_sync_frequency_is_minutes_as_a_number_or_as_the_document_s_text(
    frequency: Any, seconds: float | None
) -> None:
    assert fivetran_api.state_of(connection(sync_frequency=frequency)).schedule_seconds == seconds


def test_a_connection_without_a_status_reports_no_state_but_its_name() -> None:
    assert fivetran_api.state_of(connection(status=None, paused="no")) == ConnectionState(
        "gsheets.table", {}, None, 21600.0
    )


def test_the_configuration_api_adds_a_succeeded_job_s_streams_each_with_what_it_committed() -> None:
    info = json.loads((DATA / "sources" / "airbyte" / "airflow-jobs-get-succeeded.json").read_text())

    assert airbyte_api.details_of(info, SUCCEEDED) == {
        "streams": [
            {"name": "vehicle", "status": SUCCEEDED, "records_synced": 0},
            {"name": "location", "status": SUCCEEDED, "records_synced": 0},
        ]
    }


def test_the_configuration_api_adds_a_failed_job_s_first_failure_in_the_words_of_the_notifications() -> None:
    info = json.loads((DATA / "sources" / "airbyte" / "datahub-job-failed.jobs-get.json").read_text())

    assert airbyte_api.details_of(info, FAILED) == {
        "error_summary": "Message: HikariPool-1 - Connection is not available, request timed out after 10003ms."
        " (type: config_error, origin: source)"
    }


def test_a_failure_naming_a_stream_fails_that_stream_and_the_start_is_when_the_job_left_the_queue() -> None:
    info = {
        "job": {"id": 7, "startedAt": 1775458800},
        "attempts": [
            {"attempt": {"failureSummary": {"failures": [{"externalMessage": "boom"}]}}},
            {
                "attempt": {
                    "streamStats": [
                        {"streamName": "users", "streamNamespace": "public", "stats": {"recordsCommitted": 5}},
                        {"streamName": "orders", "stats": {"recordsCommitted": 0, "bytesCommitted": 0}},
                    ],
                    "failureSummary": {
                        "failures": [{"externalMessage": "timeout", "streamDescriptor": {"name": "orders"}}]
                    },
                }
            },
        ],
    }

    assert airbyte_api.details_of(info, FAILED) == {
        "started_at": "2026-04-06T07:00:00Z",
        "error_summary": "timeout",
        "streams": [
            {"name": "public.users", "records_synced": 5},
            {"name": "orders", "status": FAILED, "records_synced": 0, "bytes_synced": 0},
        ],
    }


def test_details_not_as_documented_are_left_out() -> None:
    assert airbyte_api.details_of({"job": None, "attempts": "none"}, FAILED) == {}
    assert airbyte_api.details_of([], SUCCEEDED) == {}
    assert airbyte_api.details_of({"attempts": [{"attempt": {"streamStats": [{"stats": {}}, 3]}}]}, FAILED) == {}


def test_a_job_with_its_details_is_the_public_api_s_job_with_the_streams_and_failure_added() -> None:
    details: dict[str, Any] = {"started_at": "2026-04-06T07:01:00Z", "error_summary": "boom (origin: source)"}
    details["streams"] = [{"name": "public.users", "status": FAILED, "records_synced": 1400, "bytes_synced": 281_000}]

    job = airbyte_api.job_of(airbyte_job(status="failed"), "orders", latest=LATEST, details=details)

    assert (job.status, job.started_at, job.error_summary, job.records_synced, job.streams_failed) == (
        FAILED,
        parse_rfc3339("2026-04-06T07:01:00Z"),
        "boom (origin: source)",
        1400,
        1,
    )
    assert [(s.name, s.status, s.records_synced) for s in job.streams] == [("public.users", FAILED, 1400)]
