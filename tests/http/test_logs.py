"""Job log lines: both formats, order, levels, streams, and re-sent batches."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from calabi_exporter.joblogs import LogLine, parse_text
from calabi_exporter.store import Store
from flask.testing import FlaskClient

from tests.support.jobs import job
from tests.support.samples import Samples

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

PRODUCT_LOG = """\
2026-04-06T08:00:01Z INFO Syncing stream: Account
2026-04-06T08:00:19Z INFO Stream Account: 4,218 records synced in 18.2s
2026-04-06T08:00:19Z INFO Stream Account: complete
2026-04-06T08:00:20Z WARN Salesforce API rate limit at 85% — throttling requests
INFO Retrying after 30s backoff
ERROR Failed to refresh OAuth token for source "HubSpot Production"
ERROR Response 401: {"error": "invalid_token"}
debug Connector internals
"""


@pytest.fixture
def known_job(client: FlaskClient) -> str:
    assert client.post("/api/v1/jobs", json=job("job_1", "running")).status_code == 200
    return "job_1"


def test_product_format_text_is_stored_in_order_with_levels_times_and_streams(
    client: FlaskClient, store: Store, known_job: str
) -> None:
    response = client.post(f"/api/v1/jobs/{known_job}/logs", data=PRODUCT_LOG, content_type="text/plain")

    assert response.status_code == 200
    assert response.get_json() == {"accepted": 8, "unchanged": 0}
    lines = store.reads.log_lines(known_job)
    assert lines[0] == LogLine("INFO", "Syncing stream: Account", 1775462401.0, "Account")
    assert lines[1] == LogLine("INFO", "Stream Account: 4,218 records synced in 18.2s", 1775462419.0, "Account")
    assert lines[3] == LogLine("WARN", "Salesforce API rate limit at 85% — throttling requests", 1775462420.0, None)
    assert lines[4] == LogLine("INFO", "Retrying after 30s backoff", None, None)
    assert lines[6] == LogLine("ERROR", 'Response 401: {"error": "invalid_token"}', None, None)
    assert [line.level for line in lines] == ["INFO", "INFO", "INFO", "WARN", "INFO", "ERROR", "ERROR", "DEBUG"]


def test_json_lines_are_stored_with_their_stream(client: FlaskClient, store: Store, known_job: str) -> None:
    body = [
        {"timestamp": "2026-04-06T08:00:01Z", "level": "info", "message": "Syncing stream: Lead"},
        {"timestamp": "2026-04-06T08:00:02Z", "level": "WARNING", "message": "deprecated field", "stream": "Lead"},
    ]

    response = client.post(f"/api/v1/jobs/{known_job}/logs", json=body)

    assert response.get_json() == {"accepted": 2, "unchanged": 0}
    assert store.reads.log_lines(known_job) == [
        LogLine("INFO", "Syncing stream: Lead", 1775462401.0, "Lead"),
        LogLine("WARN", "deprecated field", 1775462402.0, "Lead"),
    ]


def test_timestamped_lines_sent_again_are_kept_once(
    client: FlaskClient, store: Store, known_job: str, scrape: Callable[[], Samples]
) -> None:
    text = "2026-04-06T08:00:01Z INFO a\n2026-04-06T08:00:01Z INFO a\n2026-04-06T08:00:02Z INFO b\n"
    first = client.post(f"/api/v1/jobs/{known_job}/logs", data=text, content_type="text/plain")
    again = client.post(f"/api/v1/jobs/{known_job}/logs", data=text, content_type="text/plain")

    assert first.get_json() == {"accepted": 3, "unchanged": 0}
    assert again.get_json() == {"accepted": 0, "unchanged": 3}
    assert [line.message for line in store.reads.log_lines(known_job)] == ["a", "a", "b"]
    assert scrape().value("calabi_exporter_ingested_records_total", endpoint="logs", outcome="unchanged") == 3


@pytest.mark.parametrize(
    ("body", "content_type", "field"),
    [
        pytest.param("INFO ok\nNOTICE what\n", "text/plain", "line 2.level", id="unknown level"),
        pytest.param("just words", "text/plain", "line 1.level", id="no level"),
        pytest.param("2026-04-06T08:00:01 INFO x", "text/plain", "line 1.timestamp", id="timestamp without offset"),
        pytest.param("\n\n", "text/plain", "lines", id="no lines"),
        pytest.param(json.dumps({"level": "INFO"}), "application/json", "lines", id="not a list"),
        pytest.param(json.dumps([{"level": "INFO"}]), "application/json", "lines[0].message", id="no message"),
        pytest.param(json.dumps([{"message": "x"}]), "application/json", "lines[0].level", id="no level (JSON)"),
        pytest.param(
            json.dumps([{"level": "INFO", "message": "x", "timestamp": "now"}]),
            "application/json",
            "lines[0].timestamp",
            id="bad timestamp",
        ),
        pytest.param(
            json.dumps([{"level": "INFO", "message": "x", "host": "a"}]),
            "application/json",
            "lines[0].host",
            id="unknown field",
        ),
        pytest.param("INFO x", "application/xml", "Content-Type", id="wrong content type"),
    ],
)
def test_bad_log_lines_are_refused_whole_naming_the_line(
    client: FlaskClient, store: Store, known_job: str, body: str, content_type: str, field: str
) -> None:
    response = client.post(f"/api/v1/jobs/{known_job}/logs", data=body, content_type=content_type)

    assert response.status_code in (400, 415)
    assert response.get_json()["field"] == field
    assert store.reads.log_lines(known_job) == []


def test_logs_of_an_unknown_job_get_404(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs/nobody/logs", data="INFO x", content_type="text/plain")

    assert response.status_code == 404
    assert response.get_json()["field"] == "job_id"


def test_logs_for_a_malformed_job_id_get_400(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs/bad%20id/logs", data="INFO x", content_type="text/plain")

    assert response.status_code == 400
    assert response.get_json()["field"] == "job_id"


def test_text_parsing_reads_the_stream_of_product_messages() -> None:
    lines = parse_text("INFO Syncing stream: Opportunity Line Item\nINFO Stream Order: complete\n")

    assert [line.stream for line in lines] == ["Opportunity Line Item", "Order"]
