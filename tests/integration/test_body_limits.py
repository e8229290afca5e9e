"""The body size limit holds for every way a body can arrive: with a Content-Length or chunked."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job

LIMIT = 1_048_576  # bytes


@pytest.fixture
def exporter(exporter_process: Callable[..., ExporterProcess]) -> ExporterProcess:
    return exporter_process(env={"CALABI_MAX_BODY_BYTES": str(LIMIT)})


def chunks(body: bytes, size: int = 65_536) -> Iterator[bytes]:
    """The body as a generator: requests sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def ndjson(count: int) -> bytes:
    return b"".join(json.dumps(job(f"job-{n:06d}", records_synced=n)).encode() + b"\n" for n in range(count))


def jobs_stored(exporter: ExporterProcess) -> int:
    return int(sum(v for k, v in exporter.scrape().family("calabi_sync_jobs_total").items()))


CHUNKED = [pytest.param(True, id="chunked"), pytest.param(False, id="content-length")]


def post_body(
    exporter: ExporterProcess, path: str, body: bytes, content_type: str, *, chunked: bool
) -> requests.Response:
    return requests.post(
        exporter.url + path,
        data=chunks(body) if chunked else body,
        headers={"Content-Type": content_type},
        timeout=60,
    )


@pytest.mark.parametrize("chunked", CHUNKED)
def test_a_job_batch_over_the_limit_is_a_413_and_stores_nothing(exporter: ExporterProcess, chunked: bool) -> None:
    body = ndjson(12_000)
    assert len(body) > LIMIT

    response = post_body(exporter, "/api/v1/jobs", body, "application/x-ndjson", chunked=chunked)

    assert response.status_code == 413
    assert response.json()["field"] == "body"
    assert jobs_stored(exporter) == 0


@pytest.mark.parametrize("chunked", CHUNKED)
def test_a_log_body_over_the_limit_is_a_413_and_stores_no_line(exporter: ExporterProcess, chunked: bool) -> None:
    assert requests.post(exporter.url + "/api/v1/jobs", json=job("j1", "running"), timeout=10).status_code == 200
    body = b"".join(b"2026-04-06T08:00:01Z INFO line %d of a long log\n" % n for n in range(40_000))
    assert len(body) > LIMIT

    response = post_body(exporter, "/api/v1/jobs/j1/logs", body, "text/plain", chunked=chunked)

    assert response.status_code == 413
    assert response.json()["field"] == "body"
    # One line more through the same door: the job holds exactly that one.
    assert post_body(exporter, "/api/v1/jobs/j1/logs", b"INFO one line\n", "text/plain", chunked=chunked).json() == {
        "accepted": 1,
        "unchanged": 0,
    }
    lines = exporter.scrape().value("calabi_sync_log_lines_total", connection="Salesforce → Snowflake", level="info")
    assert lines == 1


def test_a_chunked_body_within_the_limit_is_taken_whole(exporter: ExporterProcess) -> None:
    body = ndjson(5_000)
    assert len(body) < LIMIT

    response = requests.post(
        exporter.url + "/api/v1/jobs", data=chunks(body), headers={"Content-Type": "application/x-ndjson"}, timeout=60
    )

    assert response.status_code == 200
    assert response.json()["accepted"] == 5_000
    assert jobs_stored(exporter) == 5_000
