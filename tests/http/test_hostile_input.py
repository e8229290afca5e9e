"""Hostile input gets the same 400 naming the field on every backend, and costs no other record.

NUL characters, totals added up past their bound, a job's streams grown one
post at a time, read parameters no API answer holds, a charset that is no
encoding, and line separators other than ``\\n`` hidden in a log message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from calabi_exporter.model import MAX_STREAMS
from calabi_exporter.store import Store
from flask.testing import FlaskClient

from tests.support.jobs import job
from tests.support.samples import Samples

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

MAX_COUNT = 2**53 - 1
NUL_MESSAGE = "must not contain NUL characters (\\u0000)"


def cursor(value: object) -> str:
    """A cursor as the API encodes one, holding ``value``."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def streams(names: range | list[str], **fields: Any) -> list[dict[str, Any]]:
    return [{"name": str(name), **fields} for name in names]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"status": "failed", "error_summary": "token\u0000expired"}, "error_summary", id="error_summary"),
        pytest.param({"connection_name": "Sales\u0000force"}, "connection_name", id="connection_name"),
        pytest.param({"source": "\u0000"}, "source", id="source"),
        pytest.param({"destination": "Snow\u0000flake"}, "destination", id="destination"),
        pytest.param({"connection_id": "c\u0000"}, "connection_id", id="connection_id"),
        pytest.param({"job_url": "https://calabi.example/j\u0000"}, "job_url", id="job_url"),
        pytest.param({"streams": [{"name": "Account"}, {"name": "Con\u0000tact"}]}, "streams[1].name", id="stream"),
        pytest.param({"streams": [{"name": "Account", "error": "\u0000"}]}, "streams[0].error", id="stream-error"),
    ],
)
def test_a_nul_in_any_text_of_a_record_is_a_400_naming_the_field_and_the_batch_keeps_the_rest(
    client: FlaskClient, store: Store, fields: dict[str, Any], field: str
) -> None:
    batch = [job("good-1"), job("good-2"), {**job("bad"), **fields}, job("good-3")]

    response = client.post("/api/v1/jobs", json={"jobs": batch})

    assert response.status_code == 200
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (3, 1)
    assert body["errors"] == [{"index": 2, "field": field, "job_id": "bad", "error": f"{field} {NUL_MESSAGE}"}]
    assert [store.reads.job(j) is not None for j in ("good-1", "good-2", "bad", "good-3")] == [True, True, False, True]


def test_a_record_alone_with_a_nul_is_a_400_and_the_next_request_is_served(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", json=job("j1", "failed", error_summary="a\u0000b"))

    assert response.status_code == 400
    assert (response.get_json()["field"], response.get_json()["error"]) == (
        "error_summary",
        f"error_summary {NUL_MESSAGE}",
    )
    assert client.post("/api/v1/jobs", json=job("j1", "failed", error_summary="ab")).status_code == 200
    assert client.get("/api/v1/jobs/j1").get_json()["error_summary"] == "ab"


def test_a_nul_in_the_products_webhook_is_a_400_naming_the_field(client: FlaskClient) -> None:
    payload = {"connection_name": "Sales\u0000force", "job_id": "w1", "status": "failed"}

    response = client.post("/webhooks/calabi", json=payload)

    assert response.status_code == 400
    assert response.get_json()["field"] == "connection_name"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param(
            {"data": "INFO fine\nERROR bad\u0000line\n", "content_type": "text/plain"}, "line 2.message", id="text"
        ),
        pytest.param(
            {"json": [{"level": "INFO", "message": "fine"}, {"level": "INFO", "message": "\u0000"}]},
            "lines[1].message",
            id="json-message",
        ),
        pytest.param(
            {"json": [{"level": "INFO", "message": "fine", "stream": "Acc\u0000ount"}]}, "lines[0].stream", id="stream"
        ),
    ],
)
def test_a_nul_in_a_log_line_refuses_the_upload_naming_the_line_as_any_bad_line_does(
    client: FlaskClient, store: Store, kwargs: dict[str, Any], field: str
) -> None:
    assert client.post("/api/v1/jobs", json=job("j1", "running")).status_code == 200

    response = client.post("/api/v1/jobs/j1/logs", **kwargs)

    assert response.status_code == 400
    assert response.get_json() == {"error": f"{field} {NUL_MESSAGE}", "field": field}
    assert store.reads.log_lines("j1") == []


def test_stream_totals_past_two_to_the_53_are_a_400_naming_the_total_and_the_batch_keeps_the_rest(
    client: FlaskClient, store: Store, scrape: Callable[[], Samples]
) -> None:
    batch = [
        job("two-at-the-bound", streams=streams(["a", "b"], records_synced=MAX_COUNT)),
        job("good", streams=streams(["a"], records_synced=5)),
        job("1100-at-the-bound", streams=streams(range(1100), bytes_synced=MAX_COUNT)),
        job("own-total", records_synced=7, streams=streams(["a", "b"], records_synced=MAX_COUNT)),
    ]

    response = client.post("/api/v1/jobs", json={"jobs": batch})

    assert response.status_code == 200
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    too_big = f"(added up from the streams) must be at most {MAX_COUNT}"
    assert body["errors"] == [
        {
            "index": 0,
            "field": "records_synced",
            "job_id": "two-at-the-bound",
            "error": f"records_synced {too_big}",
        },
        {
            "index": 2,
            "field": "bytes_synced",
            "job_id": "1100-at-the-bound",
            "error": f"bytes_synced {too_big}",
        },
    ]
    assert store.reads.job("two-at-the-bound") is None
    assert store.reads.job("1100-at-the-bound") is None
    own = store.reads.job("own-total")
    assert own is not None and own.records_synced == 7
    assert scrape().value("calabi_sync_records_synced_total", connection="Salesforce → Snowflake") == 12


def test_a_running_jobs_streams_that_would_add_up_past_the_bound_are_refused_and_its_stored_state_kept(
    client: FlaskClient, store: Store, scrape: Callable[[], Samples]
) -> None:
    first = job("j1", "running", records_synced=7, streams=streams(["a", "b"], records_synced=MAX_COUNT))
    assert client.post("/api/v1/jobs", json=first).status_code == 200

    # Without a total of its own, the running job's total is added up again from every stream it has.
    again = job("j1", "running", streams=streams(["a"]))
    response = client.post("/api/v1/jobs", json={"jobs": [again, job("other")]})

    assert response.status_code == 200
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert [(e["index"], e["field"], e["job_id"]) for e in body["errors"]] == [(0, "records_synced", "j1")]
    stored = store.reads.job("j1")
    assert stored is not None
    assert ([s.name for s in stored.streams], stored.records_synced) == (["a", "b"], 7)
    samples = scrape()
    assert samples.value("calabi_exporter_rejected_records_total", endpoint="jobs", field="records_synced") == 1
    assert samples.value("calabi_exporter_ingested_records_total", endpoint="jobs", outcome="rejected") == 1


@pytest.mark.parametrize("status", ["succeeded", "running"])
def test_a_job_reposted_with_new_stream_names_cannot_grow_past_the_stream_limit(
    client: FlaskClient, store: Store, status: str
) -> None:
    half = MAX_STREAMS // 2 + 1
    assert client.post("/api/v1/jobs", json=job("j1", status, streams=streams(range(half)))).status_code == 200

    again = job("j1", status, streams=streams(range(half, 2 * half)))
    response = client.post("/api/v1/jobs", json={"jobs": [again, job("other")]})
    alone = client.post("/api/v1/jobs", json=again)

    assert response.status_code == 200
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    message = f"streams would give job 'j1' {2 * half} streams; a job holds at most {MAX_STREAMS}"
    assert body["errors"] == [{"index": 0, "field": "streams", "job_id": "j1", "error": message}]
    assert alone.status_code == 400
    assert (alone.get_json()["field"], alone.get_json()["outcome"]) == ("streams", "rejected")
    stored = store.reads.job("j1")
    assert stored is not None and len(stored.streams) == half
    assert store.reads.job("other") is not None


def test_a_finished_job_may_still_be_sent_streams_up_to_the_limit(client: FlaskClient, store: Store) -> None:
    assert client.post("/api/v1/jobs", json=job("j1", streams=streams(range(MAX_STREAMS - 1)))).status_code == 200

    last = client.post("/api/v1/jobs", json=job("j1", streams=streams(["last"])))
    same = client.post("/api/v1/jobs", json=job("j1", streams=streams(["last"])))

    assert (last.get_json()["outcome"], same.get_json()["outcome"]) == ("accepted", "unchanged")
    stored = store.reads.job("j1")
    assert stored is not None and len(stored.streams) == MAX_STREAMS


@pytest.mark.parametrize(
    ("url", "field"),
    [
        pytest.param(f"/api/v1/jobs/j1?cursor={cursor(2**63)}", "cursor", id="log-cursor-2^63"),
        pytest.param(f"/api/v1/jobs/j1?cursor={cursor(2**64 + 5)}", "cursor", id="log-cursor-2^64"),
        pytest.param(f"/api/v1/jobs?cursor={cursor([int('9' * 400), 'j1'])}", "cursor", id="jobs-cursor-400-digits"),
        pytest.param("/api/v1/jobs?cursor=" + base64.urlsafe_b64encode(b'[NaN,"j1"]').decode(), "cursor", id="nan"),
        pytest.param(
            "/api/v1/jobs?cursor=" + base64.urlsafe_b64encode(b'[Infinity,"j1"]').decode(), "cursor", id="inf"
        ),
        pytest.param("/api/v1/jobs?cursor=" + cursor([1775462400.0, "j\u0000"]), "cursor", id="nul-in-jobs-cursor"),
        pytest.param("/api/v1/jobs?cursor=" + "A" * 5000, "cursor", id="long-cursor"),
        pytest.param("/api/v1/jobs/j1?search=a%00b", "search", id="nul-in-search"),
        pytest.param("/api/v1/jobs/j1?level=INFO%00", "level", id="nul-in-level"),
        pytest.param("/api/v1/jobs/j%00b", "job_id", id="nul-in-job-id"),
        pytest.param("/api/v1/jobs/" + "j" * 129, "job_id", id="long-job-id"),
        pytest.param("/api/v1/jobs?connection=Sales%00force", "connection", id="nul-in-connection"),
        pytest.param("/api/v1/connections?window=7d%00", "window", id="nul-in-window"),
    ],
)
def test_read_input_no_answer_holds_is_a_400_naming_the_parameter(client: FlaskClient, url: str, field: str) -> None:
    assert client.post("/api/v1/jobs", json=job("j1", "running")).status_code == 200
    assert client.post("/api/v1/jobs/j1/logs", data="INFO one\n", content_type="text/plain").status_code == 200

    response = client.get(url)

    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert client.get("/api/v1/jobs/j1").status_code == 200


def test_the_largest_log_cursor_the_store_holds_reads_an_empty_page(client: FlaskClient) -> None:
    assert client.post("/api/v1/jobs", json=job("j1", "running")).status_code == 200

    response = client.get(f"/api/v1/jobs/j1?cursor={cursor(2**63 - 1)}")

    assert response.status_code == 200
    assert response.get_json()["logs"] == {"lines": [], "next_cursor": None}


@pytest.mark.parametrize("charset", ["undefined", "rot13", "base64", "no-such-codec"])
def test_a_log_upload_in_a_charset_that_is_no_text_encoding_is_a_400_naming_the_charset(
    client: FlaskClient, charset: str
) -> None:
    assert client.post("/api/v1/jobs", json=job("j1", "running")).status_code == 200

    response = client.post("/api/v1/jobs/j1/logs", data=b"INFO x\n", content_type=f"text/plain; charset={charset}")

    assert response.status_code == 400
    assert response.get_json() == {
        "error": f"must name a text encoding such as utf-8 (got {charset!r})",
        "field": "charset",
    }


def test_a_log_upload_in_latin_1_is_read_in_latin_1(client: FlaskClient, store: Store) -> None:
    assert client.post("/api/v1/jobs", json=job("j1", "running")).status_code == 200

    response = client.post(
        "/api/v1/jobs/j1/logs", data="INFO Zürich\n".encode("latin-1"), content_type="text/plain; charset=iso-8859-1"
    )

    assert response.status_code == 200
    assert [line.message for line in store.reads.log_lines("j1")] == ["Zürich"]


@pytest.mark.parametrize(
    "separator",
    [
        pytest.param("\u2028", id="line-separator"),
        pytest.param("\u2029", id="paragraph-separator"),
        pytest.param("\x0c", id="form-feed"),
        pytest.param("\x0b", id="vertical-tab"),
        pytest.param("\x85", id="nel"),
        pytest.param("\x1e", id="record-separator"),
        pytest.param("\r", id="bare-cr"),
    ],
)
def test_text_logs_split_on_newline_only_so_a_message_cannot_forge_a_line(
    client: FlaskClient, store: Store, scrape: Callable[[], Samples], separator: str
) -> None:
    assert client.post("/api/v1/jobs", json=job("j1", "running")).status_code == 200
    message = f"user input{separator}ERROR Failed to refresh OAuth token"

    response = client.post("/api/v1/jobs/j1/logs", data=f"INFO {message}\r\nINFO next\n", content_type="text/plain")

    assert response.status_code == 200
    assert response.get_json() == {"accepted": 2, "unchanged": 0}
    lines = store.reads.log_lines("j1")
    assert [(line.level, line.message) for line in lines] == [("INFO", message), ("INFO", "next")]
    samples = scrape()
    assert samples.value("calabi_sync_log_lines_total", connection="Salesforce → Snowflake", level="error") == 0
    assert samples.value("calabi_sync_log_lines_total", connection="Salesforce → Snowflake", level="info") == 2


def test_ndjson_records_end_at_a_newline_and_a_carriage_return_inside_one_is_json_whitespace(
    client: FlaskClient, store: Store
) -> None:
    body = (
        b'{"job_id": "a",\r"connection_name": "c", "status": "running"}\r\n{"job_id": "b", "connection_name": "c",\x0c'
    )
    body += b' "status": "running"}\n'

    response = client.post("/api/v1/jobs", data=body, content_type="application/x-ndjson")

    assert response.status_code == 200
    body_json = response.get_json()
    assert (body_json["accepted"], body_json["rejected"]) == (1, 1)
    assert body_json["errors"] == [{"index": 1, "field": "record", "error": "record is not valid JSON (line 2)"}]
    assert store.reads.job("a") is not None
