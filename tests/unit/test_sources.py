"""Airbyte's and Fivetran's webhook payloads, as the vendors send them, read into the job each describes.

The payloads are in ``tests/data/sources/`` with their public sources (its README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from calabi_exporter.model import LATEST_TIME, Job, ValidationError
from calabi_exporter.sources import airbyte, fivetran

from tests.support.paths import DATA

AIRBYTE = DATA / "sources" / "airbyte"
FIVETRAN = DATA / "sources" / "fivetran"


def load(path: Path) -> Any:
    return json.loads(path.read_bytes())


def notice(payload: Any) -> airbyte.Notice:
    return airbyte.read_notification(payload, latest=LATEST_TIME)


def event(payload: Any) -> fivetran.Event:
    return fivetran.read_event(payload, latest=LATEST_TIME)


def titled(title: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """A notification as Airbyte's notification client builds it (SlackNotificationClient.kt, line 547)."""
    body: dict[str, Any] = {
        "text": "legacy text",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{title}: <https://airbyte.example/c|A → B>"}}
        ],
    }
    if data is not None:
        body["data"] = data
    return body


def test_a_real_airbyte_cloud_sync_completed_notification_is_the_job_it_describes() -> None:
    read = notice(load(AIRBYTE / "cloud-sync-completed.json"))

    assert read.kind == "sync_completed"
    assert read.job == Job(
        job_id="airbyte:20441143",
        connection_name="Google Sheets → Postgres",
        status="succeeded",
        connection_id="aa941643-07ea-48a2-9035-024575491720",
        source="Google Sheets",
        destination="Postgres",
        platform="airbyte",
        job_type="sync",
        created_at=1729628879.0,  # 2024-10-22T20:27:59Z: Airbyte's startedAt is the job's creation
        finished_at=1729628962.0,
        records_synced=1400,
        bytes_synced=288179,
        duration_seconds=83.0,
        job_url="https://cloud.airbyte.com/workspaces/84d2dd6e-82aa-406e-91f3-bf8dbf176e69"
        "/connections/aa941643-07ea-48a2-9035-024575491720",
    )


def test_the_documentation_s_failed_sync_is_a_failed_job_with_airbyte_s_error_type_and_origin() -> None:
    read = notice(load(AIRBYTE / "docs-failed-sync.json"))  # data only, as the docs show it: told by success

    assert read.kind == "sync_failed"
    assert read.job is not None
    assert (read.job.job_id, read.job.status, read.job.error_summary) == (
        "airbyte:9988",
        "failed",
        "Something failed (type: config_error, origin: source)",
    )
    assert (read.job.records_synced, read.job.bytes_synced, read.job.duration_seconds) == (45, 90, 3600.0)


def test_the_documentation_s_successful_sync_is_a_succeeded_job() -> None:
    read = notice(load(AIRBYTE / "docs-successful-sync.json"))

    assert read.kind == "sync_completed"
    assert read.job is not None and (read.job.status, read.job.error_summary) == ("succeeded", None)


def test_a_queued_sync_is_a_pending_job_not_a_failure_though_it_says_success_false() -> None:
    data = load(AIRBYTE / "cloud-sync-completed.json")["data"] | {"success": False, "finishedAt": None}

    read = notice(titled("Sync queued", data))

    assert read.kind == "sync_queued"
    assert read.job is not None
    assert (read.job.status, read.job.created_at, read.job.finished_at, read.job.records_synced) == (
        "pending",
        1729628879.0,
        None,
        None,
    )


def test_a_cancelled_job_is_cancelled_not_failed() -> None:
    data = load(AIRBYTE / "docs-failed-sync.json")["data"] | {"errorType": "manual_cancellation"}

    read = notice(titled("Sync failure occurred", data))

    assert read.job is not None and read.job.status == "cancelled"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param(titled("Connection disabled", None), "connection_disabled", id="disabled"),
        pytest.param(titled("Warning - repeated connection failures", None), "repeated_failures_warning", id="warn"),
        pytest.param(load(AIRBYTE / "test-hello-world.json"), "test", id="test button before 1.3"),
        pytest.param(
            titled("[THIS IS A TEST NOTIFICATION] Sync completed", load(AIRBYTE / "docs-successful-sync.json")["data"]),
            "test",
            id="test button",
        ),
        pytest.param(titled("The schema of 'A → B' has changed", None), "other", id="schema change"),
        pytest.param(titled("Something new", {"jobId": 1}), "other", id="a title not known"),
    ],
)
def test_notifications_that_describe_no_job_are_counted_by_kind_and_store_nothing(body: Any, kind: str) -> None:
    assert notice(body) == airbyte.Notice(kind, None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"jobId": "9988"}, "data.jobId", id="job id as text"),
        pytest.param({"jobId": None}, "data.jobId", id="no job id"),
        pytest.param({"connection": {"id": "c", "name": "", "url": "u"}}, "data.connection.name", id="blank name"),
        pytest.param({"connection": "Connection"}, "data.connection", id="connection not an object"),
        pytest.param({"recordsCommitted": -1}, "data.recordsCommitted", id="negative count"),
        pytest.param({"bytesCommitted": True}, "data.bytesCommitted", id="bool count"),
        pytest.param({"finishedAt": "yesterday"}, "data.finishedAt", id="not a time"),
        pytest.param({"durationInSeconds": "1h"}, "data.durationInSeconds", id="duration as text"),
        pytest.param({"errorMessage": 7}, "data.errorMessage", id="error not text"),
        pytest.param({"source": {"name": "x" * 201}}, "data.source.name", id="name too long"),
    ],
)
def test_a_malformed_airbyte_payload_is_refused_naming_airbyte_s_field(change: dict[str, Any], field: str) -> None:
    body = load(AIRBYTE / "docs-failed-sync.json")
    body["data"] |= change

    with pytest.raises(ValidationError) as refused:
        notice(body)

    assert refused.value.field == field


def test_fivetran_s_sync_start_is_a_running_job_named_by_connector_name() -> None:
    read = event(load(FIVETRAN / "sync-start.json"))

    assert read == fivetran.Event(
        "sync_start",
        Job(
            job_id="fivetran:syn_def456",
            connection_name="users_pg",
            status="running",
            connection_id="conn_abc123",
            source="postgres",
            platform="fivetran",
            job_type="sync",
            started_at=1779789600.0,  # 2026-05-26T10:00:00.000Z
        ),
    )


def test_a_real_fivetran_sync_end_is_a_succeeded_job_of_its_sync() -> None:
    read = event(load(FIVETRAN / "sync-end-successful.live.json"))

    assert read.kind == "sync_end"
    assert read.job is not None
    assert (read.job.job_id, read.job.connection_name, read.job.status, read.job.finished_at) == (
        "fivetran:b4703f73-6315-4e22-8d7a-3bfb18b2fed2",
        "ftar_pg",
        "succeeded",
        1779408368.638,
    )


@pytest.mark.parametrize(
    ("data", "status", "summary"),
    [
        pytest.param({"status": "FAILURE_WITH_TASK"}, "failed", "Fivetran: FAILURE_WITH_TASK", id="failure"),
        pytest.param(
            {"status": "FAILURE_WITH_TASK", "reason": "ErrorExceptionFromJava: something failed"},
            "failed",
            "ErrorExceptionFromJava: something failed",
            id="failure with its reason",
        ),
        pytest.param({"status": "RESCHEDULED"}, "cancelled", "Fivetran rescheduled the sync", id="rescheduled"),
        pytest.param(
            {"status": "PARTIALLY_DONE", "reason": "r"},
            "cancelled",
            "Fivetran ended the sync as PARTIALLY_DONE: r",
            id="a status not known",
        ),
    ],
)
def test_a_sync_end_s_status_is_the_job_s_and_only_a_failure_counts_as_one(
    data: dict[str, Any], status: str, summary: str
) -> None:
    body = load(FIVETRAN / "sync-end-failure-with-task.json") | {"data": data}

    read = event(body)

    assert read.job is not None and (read.job.status, read.job.error_summary) == (status, summary)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param(load(FIVETRAN / "test-event.docs.json"), "test", id="webhook creation check"),
        pytest.param(load(FIVETRAN / "test-call-sync-end.json"), "test", id="the /test call"),
        pytest.param(load(FIVETRAN / "sync-end-failure-reason.2021.json"), "other", id="no sync id, real connector"),
        pytest.param({"event": "dbt_run_succeeded", "connector_id": "c"}, "other", id="another event"),
    ],
)
def test_fivetran_events_that_make_no_job_are_counted_by_kind(body: Any, kind: str) -> None:
    assert event(body) == fivetran.Event(kind, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"event": 1}, "event", id="event not text"),
        pytest.param({"event": "sync_end", "sync_id": 5}, "sync_id", id="sync id not text"),
        pytest.param({"event": "sync_start", "sync_id": "a b", "connector_name": "n"}, "sync_id", id="sync id grammar"),
        pytest.param({"event": "sync_end", "sync_id": "s", "connector_name": "n"}, "data.status", id="no status"),
        pytest.param({"event": "sync_start", "sync_id": "s"}, "connector_name", id="no name nor id"),
        pytest.param(
            {"event": "sync_start", "sync_id": "s", "connector_name": "n", "created": "soon"}, "created", id="created"
        ),
        pytest.param(
            {"event": "sync_end", "sync_id": "s", "connector_name": "n", "data": {"status": "FAILED", "reason": 3}},
            "data.reason",
            id="reason not text",
        ),
    ],
)
def test_a_malformed_fivetran_event_is_refused_naming_its_field(body: Any, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        event(body)

    assert refused.value.field == field


@pytest.mark.parametrize(
    ("name", "signature"),
    [
        ("sync-end-failure-with-task.json", "d440a8575ec0346d07f2cf0a82f21eac15ef31aa5fc71945b85d76171dc6cbe7"),
        ("sync-start.json", "EC82D5311E65B26790D267952B835DB81EEC5E3EE0705D7273CBB75DCBF1A300"),
    ],
)
def test_a_body_signed_with_the_secret_is_taken_in_either_hex_case(name: str, signature: str) -> None:
    body = (FIVETRAN / name).read_bytes()

    assert fivetran.signature_valid("test-shared-secret", body, signature)
    assert not fivetran.signature_valid("another-secret", body, signature)
    assert not fivetran.signature_valid("test-shared-secret", body + b"\n", signature)  # one byte more
    assert not fivetran.signature_valid("test-shared-secret", body, "sha256=" + signature)
    assert not fivetran.signature_valid("test-shared-secret", body, "é" * 64)
