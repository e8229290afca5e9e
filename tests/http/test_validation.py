"""Bad input gets a clear 4xx naming the field, and nothing of it is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from calabi_exporter.store import Store
from flask.testing import FlaskClient

from tests.support.jobs import job
from tests.support.samples import parse_samples

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

GOOD = job("job_01HX4M9QZPKR", finished_at="2026-04-06T08:03:17Z", records_synced=10)


def _with(**changes: Any) -> dict[str, Any]:
    record = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            record.pop(key)
        else:
            record[key] = value
    return record


BAD_RECORDS = [
    pytest.param(_with(job_id=...), "job_id", id="job_id missing"),
    pytest.param(_with(job_id=""), "job_id", id="job_id empty"),
    pytest.param(_with(job_id="job 1"), "job_id", id="job_id with a space"),
    pytest.param(_with(job_id="j" * 129), "job_id", id="job_id of 129 characters"),
    pytest.param(_with(job_id=12), "job_id", id="job_id a number"),
    pytest.param(_with(connection_name=...), "connection_name", id="connection_name missing"),
    pytest.param(_with(connection_name="   "), "connection_name", id="connection_name blank"),
    pytest.param(_with(connection_name="x" * 201), "connection_name", id="connection_name of 201 characters"),
    pytest.param(_with(connection_name="bad \ud800"), "connection_name", id="connection_name lone surrogate"),
    pytest.param(_with(status=...), "status", id="status missing"),
    pytest.param(_with(status="done"), "status", id="status unknown"),
    pytest.param(_with(status=None), "status", id="status null"),
    pytest.param(_with(job_type="full"), "job_type", id="job_type unknown"),
    pytest.param(_with(records_synced=-1), "records_synced", id="records_synced negative"),
    pytest.param(_with(records_synced=1.5), "records_synced", id="records_synced fractional"),
    pytest.param(_with(records_synced="10"), "records_synced", id="records_synced a string"),
    pytest.param(_with(records_failed=True), "records_failed", id="records_failed a boolean"),
    pytest.param(_with(bytes_synced=2**64), "bytes_synced", id="bytes_synced too large"),
    pytest.param(_with(attempt=-2), "attempt", id="attempt negative"),
    pytest.param(_with(duration_seconds=-3), "duration_seconds", id="duration negative"),
    pytest.param(_with(started_at="yesterday"), "started_at", id="started_at not RFC 3339"),
    pytest.param(_with(started_at="2026-04-06T08:00:01"), "started_at", id="started_at without offset"),
    pytest.param(_with(finished_at="2026-13-06T08:00:01Z"), "finished_at", id="finished_at month 13"),
    pytest.param(_with(status="running"), "finished_at", id="finished_at on a running job"),
    pytest.param(_with(failed_at="2026-04-06T08:03:17Z"), "failed_at", id="failed_at on a succeeded job"),
    pytest.param(_with(error_summary=["a"]), "error_summary", id="error_summary a list"),
    pytest.param(_with(record_synced=5), "record_synced", id="unknown field (typo)"),
    pytest.param(_with(streams={"name": "a"}), "streams", id="streams not a list"),
    pytest.param(_with(streams=["Account"]), "streams[0]", id="stream not an object"),
    pytest.param(_with(streams=[{"status": "succeeded"}]), "streams[0].name", id="stream without name"),
    pytest.param(
        _with(streams=[{"name": "a"}, {"name": "b", "records_synced": -5}]),
        "streams[1].records_synced",
        id="stream negative records",
    ),
    pytest.param(_with(streams=[{"name": "a", "status": "ok"}]), "streams[0].status", id="stream status unknown"),
    pytest.param(_with(streams=[{"name": "a", "rows": 1}]), "streams[0].rows", id="stream unknown field"),
    pytest.param(_with(streams=[{"name": "a"}, {"name": "a"}]), "streams", id="stream named twice"),
    pytest.param([1, 2][0], "record", id="record not an object"),
]


@pytest.mark.parametrize(("record", "field"), BAD_RECORDS)
def test_a_bad_record_gets_400_naming_the_field_and_stores_nothing(
    client: FlaskClient, store: Store, record: Any, field: str
) -> None:
    response = client.post("/api/v1/jobs", data=json.dumps(record), content_type="application/json")

    assert response.status_code == 400
    body = response.get_json()
    assert body["field"] == field
    assert body["error"].startswith(f"{field} ")
    assert body["rejected"] == 1
    assert store.metrics.snapshot().stored_jobs == 0
    assert store.metrics.snapshot().connections == []


BAD_REQUESTS = [
    pytest.param("/api/v1/jobs", "{not json", "application/json", 400, "body", id="jobs: broken JSON"),
    pytest.param("/api/v1/jobs", "", "application/json", 400, "body", id="jobs: empty body"),
    pytest.param("/api/v1/jobs", '{"jobs": {}}', "application/json", 400, "jobs", id="jobs: jobs not a list"),
    pytest.param(
        "/api/v1/jobs",
        json.dumps({"jobs": [GOOD], "dry_run": True}),
        "application/json",
        400,
        "dry_run",
        id="jobs: unknown field beside the batch",
    ),
    pytest.param("/api/v1/jobs", "[" * 100000, "application/json", 400, "body", id="jobs: nesting bomb"),
    pytest.param("/api/v1/jobs", "job_id=1", "application/x-www-form-urlencoded", 415, "Content-Type", id="jobs: form"),
    pytest.param("/api/v1/jobs", "{}", "", 415, "Content-Type", id="jobs: no content type"),
    pytest.param("/api/v1/jobs", "x", "application/x-ndjson", 400, "record", id="jobs: NDJSON line not JSON"),
    pytest.param("/webhooks/calabi", "{", "application/json", 400, "body", id="webhook: broken JSON"),
    pytest.param("/webhooks/calabi", "{}", "text/plain", 415, "Content-Type", id="webhook: text"),
    pytest.param(
        "/webhooks/calabi",
        json.dumps({"job_id": "j1", "connection_name": "c", "status": "exploded"}),
        "application/json",
        400,
        "status",
        id="webhook: unknown status",
    ),
]


@pytest.mark.parametrize(("path", "body", "content_type", "status", "field"), BAD_REQUESTS)
def test_a_bad_request_gets_its_status_and_names_the_field(
    client: FlaskClient, store: Store, path: str, body: str, content_type: str, status: int, field: str
) -> None:
    response = client.post(path, data=body, content_type=content_type or None)

    assert response.status_code == status
    assert response.get_json()["field"] == field
    assert store.metrics.snapshot().stored_jobs == 0


def test_an_oversized_body_gets_413(client: FlaskClient, store: Store) -> None:
    big = json.dumps({"jobs": [GOOD] * 200_000})

    response = client.post("/api/v1/jobs", data=big, content_type="application/json")

    assert response.status_code == 413
    assert response.get_json()["field"] == "body"
    assert store.metrics.snapshot().stored_jobs == 0


def test_an_unknown_route_gets_a_json_404(client: FlaskClient) -> None:
    response = client.get("/api/v1/nothing")

    assert response.status_code == 404
    assert response.get_json() == {"error": "no such route", "field": None}


def test_a_wrong_method_gets_405_with_allow(client: FlaskClient) -> None:
    response = client.delete("/api/v1/jobs")

    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}


def test_a_batch_stores_the_good_records_and_reports_the_bad(client: FlaskClient, store: Store) -> None:
    batch = {"jobs": [job("a"), job("b", records_synced=-1), job("c", status="failed"), "nonsense"]}

    response = client.post("/api/v1/jobs", json=batch)

    assert response.status_code == 200
    assert response.get_json() == {
        "accepted": 2,
        "unchanged": 0,
        "ignored": 0,
        "rejected": 2,
        "errors": [
            {
                "index": 1,
                "field": "records_synced",
                "job_id": "b",
                "error": f"records_synced must be an integer from 0 to {2**53 - 1}",
            },
            {"index": 3, "field": "record", "error": "record must be a JSON object"},
        ],
    }
    assert store.reads.job("a") is not None
    assert store.reads.job("b") is None
    assert store.reads.job("c") is not None


def test_ndjson_reports_a_line_that_is_not_json_by_index(client: FlaskClient, store: Store) -> None:
    body = "\n".join([json.dumps(job("a")), "{oops", "", json.dumps(job("b"))])

    response = client.post("/api/v1/jobs", data=body, content_type="application/x-ndjson")

    assert response.status_code == 200
    report = response.get_json()
    assert (report["accepted"], report["rejected"]) == (2, 1)
    assert report["errors"] == [{"index": 1, "field": "record", "error": "record is not valid JSON (line 2)"}]


def test_rejected_records_are_counted_by_endpoint(client: FlaskClient, store: Store) -> None:
    client.post("/api/v1/jobs", json={"jobs": [job("a"), job("b", status="nope")]})
    client.post("/webhooks/calabi", json={"job_id": "c"})

    counts = store.metrics.snapshot().ingest_counts
    assert counts[("jobs", "accepted")] == 1
    assert counts[("jobs", "rejected")] == 1
    assert counts[("webhook", "rejected")] == 1


def test_rejections_are_counted_by_the_field_their_error_names(client: FlaskClient) -> None:
    bad = [
        {"job_id": "a", "connection_name": "x", "status": "nope"},
        {"job_id": "b", "connection_name": "x", "status": "exploded"},
        {"job_id": "c", "connection_name": "x", "status": "failed", "streams": [{"name": ""}]},
        {"connection_name": "x", "status": "failed"},
    ]
    client.post("/api/v1/jobs", json={"jobs": bad})
    client.post("/api/v1/jobs", json=job("ok"))
    client.post("/api/v1/jobs/ok/logs", data="INFO fine\nNOTALEVEL nope\n", content_type="text/plain")

    samples = parse_samples(client.get("/metrics").get_data(as_text=True))
    rejected = {
        (dict(labels)["endpoint"], dict(labels)["field"]): value
        for labels, value in samples.family("calabi_exporter_rejected_records_total").items()
    }
    assert rejected == {
        ("jobs", "status"): 2,
        ("jobs", "streams[].name"): 1,
        ("jobs", "job_id"): 1,
        ("logs", "level"): 1,
    }
    assert samples.value("calabi_exporter_store_size_bytes") > 0


def test_a_count_written_as_an_integral_float_is_that_integer(client: FlaskClient, store: Store) -> None:
    record = _with(records_synced=829.0, attempt=2.0, streams=[{"name": "Account", "records_synced": 7.0}])

    response = client.post("/api/v1/jobs", json=record)

    assert response.status_code == 200
    stored = client.get(f"/api/v1/jobs/{GOOD['job_id']}").get_json()
    assert (stored["records_synced"], stored["attempt"], stored["streams"][0]["records_synced"]) == (829, 2, 7)
    assert isinstance(stored["records_synced"], int)
