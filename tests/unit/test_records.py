"""Each field of a job, a stream and a log line is declared once; the rest is read from the declaration."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from calabi_exporter import openapi_records, records_reference
from calabi_exporter.documents import job_document, line_document, stored_line_document, summary_attributes
from calabi_exporter.joblogs import LINE_FIELDS, LogLine
from calabi_exporter.model import JOB_FIELDS, STREAM_FIELDS, SUMMARY_FIELDS, Job, StreamResult, parse_job
from calabi_exporter.records import count, names, table
from calabi_exporter.store.rows import JOB_COLUMNS, STREAM_COLUMNS

from tests.support.paths import ROOT

RECORD = {
    "job_id": "job_01HX4N7T2QWB",
    "connection_name": "Salesforce → Snowflake",
    "status": "FAILED",
    "job_type": "Sync",
    "started_at": "2026-04-06T08:00:01Z",
    "failed_at": "2026-04-06T08:03:17+00:00",
    "error_summary": "Stream Account: 401 Unauthorized — token expired",
    "job_url": "https://app.calabi.io/connect/jobs/job_01HX4N7T2QWB",
    "streams": [
        {"name": "Account", "status": "failed", "records_synced": 12, "error": "401 Unauthorized"},
        {"name": "Contact", "status": "succeeded", "records_synced": 30, "bytes_synced": 2048},
    ],
}


def test_the_openapi_document_is_the_one_the_record_table_writes() -> None:
    committed = (ROOT / openapi_records.DOCUMENT).read_text(encoding="utf-8")

    assert committed == openapi_records.dumps(openapi_records.render(json.loads(committed))), (
        "exporter/openapi.json drifted from the record table: run python -m calabi_exporter.openapi_records"
    )


def test_the_records_reference_is_the_one_the_declarations_render() -> None:
    committed = (ROOT / records_reference.PAGE).read_text(encoding="utf-8")

    assert committed == records_reference.render(), (
        "docs/records.md drifted: run python -m calabi_exporter.records_reference -o docs/records.md"
    )
    for name in (*names(Job), *names(StreamResult), *names(LogLine), "failed_at"):
        assert f"| `{name}` |" in committed, name


@pytest.mark.parametrize("record", [Job, StreamResult, LogLine], ids=lambda r: r.__name__)
def test_every_field_of_every_record_says_what_it_means(record: type) -> None:
    assert all(meaning.doc and meaning.doc[0].isupper() for _, meaning in table(record))


def test_a_field_declared_without_its_meaning_is_named() -> None:
    @dataclass
    class Careless:
        rows: int | None = count("Rows written")
        bytes: int | None = None

    with pytest.raises(TypeError, match="field bytes is declared without its meaning"):
        table(Careless)


def test_the_api_accepts_the_declared_fields_and_failed_at() -> None:
    assert sorted(JOB_FIELDS) == sorted([*names(Job), "failed_at"])
    assert sorted(STREAM_FIELDS) == sorted(names(StreamResult))
    assert sorted(LINE_FIELDS) == ["level", "message", "stream", "timestamp"]
    assert list(SUMMARY_FIELDS) == [
        "records_synced",
        "records_failed",
        "bytes_synced",
        "duration_seconds",
        "streams_succeeded",
        "streams_failed",
    ]


def test_the_store_keeps_one_column_per_declared_field() -> None:
    assert list(JOB_COLUMNS) == [name for name in names(Job) if name != "streams"]
    assert list(STREAM_COLUMNS) == list(names(StreamResult))


def test_a_failed_job_is_written_back_with_every_declared_field_in_order_and_failed_at() -> None:
    document = job_document(parse_job(RECORD))

    assert list(document) == [*(name for name in names(Job) if name != "streams"), "failed_at", "streams"]
    assert {name: value for name, value in document.items() if value is not None} == {
        "job_id": "job_01HX4N7T2QWB",
        "connection_name": "Salesforce → Snowflake",
        "status": "failed",
        "platform": "calabi",  # a record that does not say comes from the product
        "job_type": "sync",
        "started_at": "2026-04-06T08:00:01Z",
        "finished_at": "2026-04-06T08:03:17Z",
        "records_synced": 42,
        "bytes_synced": 2048,
        "duration_seconds": 196.0,
        "streams_succeeded": 1,
        "streams_failed": 1,
        "error_summary": "Stream Account: 401 Unauthorized — token expired",
        "job_url": "https://app.calabi.io/connect/jobs/job_01HX4N7T2QWB",
        "failed_at": "2026-04-06T08:03:17Z",
        "streams": [
            {
                "name": "Account",
                "status": "failed",
                "records_synced": 12,
                "records_failed": None,
                "bytes_synced": None,
                "duration_seconds": None,
                "error": "401 Unauthorized",
            },
            {
                "name": "Contact",
                "status": "succeeded",
                "records_synced": 30,
                "records_failed": None,
                "bytes_synced": 2048,
                "duration_seconds": None,
                "error": None,
            },
        ],
    }


def test_a_job_that_did_not_fail_has_no_failed_at() -> None:
    document = job_document(parse_job({**RECORD, "status": "succeeded", "failed_at": None}), streams=False)

    assert "failed_at" not in document
    assert "streams" not in document
    assert document["finished_at"] is None


def test_a_log_line_is_written_with_its_job_and_connection() -> None:
    job = parse_job(RECORD)

    document = line_document(job, LogLine("WARN", "rate limit at 85%", 1775462402.0, "Account"), 1775462403.5)

    assert list(document.items()) == [
        ("job_id", "job_01HX4N7T2QWB"),
        ("connection_name", "Salesforce → Snowflake"),
        ("received_at", "2026-04-06T08:00:03.5Z"),
        ("level", "WARN"),
        ("message", "rate limit at 85%"),
        ("timestamp", "2026-04-06T08:00:02Z"),
        ("stream", "Account"),
    ]


def test_a_stored_log_line_is_read_back_with_its_id_and_when_it_came() -> None:
    document = stored_line_document(7, LogLine("ERROR", "401 Unauthorized"), 1775462403.0)

    assert list(document.items()) == [
        ("id", 7),
        ("received_at", "2026-04-06T08:00:03Z"),
        ("level", "ERROR"),
        ("message", "401 Unauthorized"),
        ("timestamp", None),
        ("stream", None),
    ]


def test_the_job_summary_event_carries_the_summary_and_what_went_wrong_when_known() -> None:
    assert summary_attributes(parse_job(RECORD)) == {
        "started_at": "2026-04-06T08:00:01Z",
        "finished_at": "2026-04-06T08:03:17Z",
        "records_synced": 42,
        "bytes_synced": 2048,
        "duration_seconds": 196.0,
        "streams_succeeded": 1,
        "streams_failed": 1,
        "error_summary": "Stream Account: 401 Unauthorized — token expired",
        "job_url": "https://app.calabi.io/connect/jobs/job_01HX4N7T2QWB",
    }
